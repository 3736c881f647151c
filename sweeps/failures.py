"""Why a trial failed, and whether trying it again could help.

A lost node, a killed process or a crash mid-evaluation is worth a retry (an eval-only one when
the artifact was saved). A bad configuration, a bad shard or a tokenizer that is not a
SentencePiece model fails every attempt the same way: retrying it only repeats the traceback, and
the user has to change something first. The same holds for storage that is full. This module
decides which is which from what the run printed and how it ended, and boils the failure down to
the one line that says what is wrong.

golf's contract (``golf.train``): a configuration or data error exits with status 2 and prints
``golf.train: <message>`` (before any compute) or ``golf.train failed: ShardError: <message>``
(found by the loader's first pass over a shard). torchrun itself exits 1 when a rank fails and
names the rank's own status on its ``failed (exitcode: N)`` line.
"""

from __future__ import annotations

import errno
import re
import signal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# How a failed run was classified (trial.json's "failure" and Tune's last result).
CONFIG = "config"    # configuration or data: change something, then run again
STORAGE = "storage"  # the experiment's storage is full: free space, then run again
RUN = "run"          # anything else: a retry may succeed

# The keys of a failed trial's last report to Tune (sweeps.trial -> sweeps.supervision).
FAILURE_KIND_KEY = "failure"
FAILURE_CAUSE_KEY = "failure_cause"

GOLF_USAGE_EXIT = 2
_AGENT_EXIT = re.compile(r"\] failed \(exitcode: (-?\d+)\)")
_AGENT_DETAIL = re.compile(r"\] failed \(exitcode: (-?\d+)\) local_rank: (\d+)")
_GOLF_LINE = re.compile(r"^golf\.train(?: failed)?: (?!warning:)(.+)$")
_DATA_ERROR = re.compile(
    r"\b(?:ConfigError|ShardError|DataError|TokenizerError)\b:?\s*(.*)$"
    r"|(tokenizer \S+ (?:is not a valid SentencePiece model|does not exist).*)$")
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
STORAGE_TEXT = re.compile(r"\[Errno (?:28|122)\]|No space left on device|Disk quota exceeded")


@dataclass(frozen=True)
class Failure:
    """A failed run: its kind (:data:`CONFIG`, :data:`STORAGE`, :data:`RUN`) and one-line cause."""

    kind: str
    cause: str

    @property
    def retry_helps(self) -> bool:
        return self.kind == RUN


def classify_run_failure(lines: Sequence[str], *, returncode: int, is_golf: bool) -> Failure:
    """Classify a run that exited with ``returncode``, from the last lines it printed."""
    rank_exits = [int(m.group(1)) for line in lines if (m := _AGENT_EXIT.search(line))]
    cause = _cause_line(lines)
    if any(STORAGE_TEXT.search(line) for line in lines[-40:]):
        return Failure(STORAGE, cause or "no space left on the storage the run writes to")
    data_cause = _data_error_line(lines)
    usage_exit = is_golf and (returncode == GOLF_USAGE_EXIT or GOLF_USAGE_EXIT in rank_exits)
    if data_cause or usage_exit:
        return Failure(CONFIG, data_cause or cause or f"golf.train exited with status {GOLF_USAGE_EXIT} "
                                                     "(a configuration or data error)")
    status = rank_exits[0] if rank_exits else returncode
    return Failure(RUN, cause or f"exited with status {status}")


def is_storage_full(error: BaseException) -> bool:
    """Whether ``error``, or any error it was raised from or while handling, is a full disk."""
    return storage_full_error(error) is not None


def storage_full_error(error: BaseException) -> BaseException | None:
    """The full-disk error in ``error``'s chain (``__cause__``/``__context__``), if any.

    Ray re-raises a trial's or a callback's error wrapped in its own types, whose text is all that
    is left of the original; that text counts too.
    """
    for item in _chain(error):
        if isinstance(item, OSError) and item.errno in _STORAGE_ERRNOS:
            return item
    for item in _chain(error):
        if STORAGE_TEXT.search(str(item)):
            return item
    return None


def _chain(error: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    stack = [error]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        stack += [e for e in (item.__cause__, item.__context__) if e is not None]


def _cause_line(lines: Sequence[str]) -> str | None:
    """golf's own last word, else the last ``SomethingError: ...`` line the ranks printed, else
    how torchrun says the rank ended (killed by a signal, or its exit status).

    torchrun's own report (its ``ChildFailedError`` traceback and banner) follows its first
    ``failed (exitcode: N)`` line and says nothing about the cause, so only what came before
    that line is read for it.
    """
    agent = next((i for i, line in enumerate(lines) if _AGENT_EXIT.search(line)), None)
    ranks_said = lines if agent is None else lines[:agent]
    for line in reversed(ranks_said):
        match = _GOLF_LINE.match(line.strip())
        if match:
            return match.group(1).strip()
    for line in reversed(ranks_said):
        text = line.strip()
        if re.match(r"^[A-Za-z_][\w.]*(?:Error|Exception|Interrupt)\b:", text):
            return text
    if agent is None:
        return None
    match = _AGENT_DETAIL.search(lines[agent])
    if match is None:
        return None
    code, rank = int(match.group(1)), match.group(2)
    if code < 0:
        try:
            how = signal.Signals(-code).name
        except ValueError:
            how = f"signal {-code}"
        return f"rank {rank} was killed by {how}"
    return f"rank {rank} exited with status {code}"


def _data_error_line(lines: Sequence[str]) -> str | None:
    for line in reversed(lines):
        match = _DATA_ERROR.search(line)
        if match:
            golf = _GOLF_LINE.match(line.strip())
            return (golf.group(1) if golf else line).strip()
    return None
