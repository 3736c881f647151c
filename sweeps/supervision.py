"""The driver's hold on a running experiment: stop signals, retries, and the trials in flight.

* :class:`StopSignals`: SIGINT (Ctrl-C) and SIGTERM (``kill``, a scheduler's stop) both take
  Tune's graceful path, the one Ctrl-C takes in plain Tune: the experiment state is saved, the
  trials are stopped (their torchrun trees die with them), and ``Tuner.fit`` returns, so the
  driver can write the table of what finished and say how to resume. Without it, SIGTERM hits
  Ray's own driver handler (``sys.exit`` from inside Tune's loop: exit 134 and a dump) and Ctrl-C
  ends with status 1. A second signal stops at once. The sweep then ends in
  :class:`SweepInterrupted` (exit status 128 + the signal: 130, 143).
* :class:`RetryPolicy`: a trial whose run failed on its configuration, its data or a full disk
  (:mod:`sweeps.failures`) tells the driver so in its last report; the driver then takes the
  trial's retries away, since every attempt would fail the same way.
* :class:`TrialsInFlight`: which trials are running, to mark them INTERRUPTED when the driver
  stops them.
* :class:`StorageWatch`: the experiment's storage is full: say so once and stop as a signal does.
* :class:`QuietTuneLogs`: keep Tune's tracebacks and notes out of the sweep's own lines.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any, TextIO

from sweeps.failures import STORAGE_TEXT, FAILURE_KIND_KEY, RUN, STORAGE, is_storage_full

try:
    from ray.tune import Callback as _TuneCallback
except ImportError:  # pragma: no cover - ray is a dependency
    _TuneCallback = object  # type: ignore[assignment,misc]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Tune's graceful-stop handler: Tune installs it for SIGUSR1 (and SIGINT) while it runs.
_TUNE_STOP_SIGNAL = getattr(signal, "SIGUSR1", None)


class SweepInterrupted(KeyboardInterrupt):
    """A sweep stopped by a signal; ``exit_code`` is the shell's 128 + signal number."""

    def __init__(self, signum: int, outcome: Any = None) -> None:
        self.signum = signum
        self.outcome = outcome
        super().__init__(f"stopped by {signal_name(signum)}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopSignals:
    """Catch SIGINT and SIGTERM for the length of a sweep (a context manager, main thread only).

    Before :meth:`tune_running` a signal raises :class:`SweepInterrupted` at once (nothing runs
    yet); while Tune runs it asks Tune to stop gracefully; after :meth:`tune_done` it is only
    recorded, so the table still gets written. ``received`` is the first signal, or None.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._phase = "before"  # "before" Tune runs, "tune" while it does, "after"
        self._previous: dict[int, Any] = {}
        self._previous_env: str | None = None

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self  # Python delivers signals to the main thread only: nothing to catch here
        self._previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
        # Tune would put its own SIGINT handler in place of ours; its SIGUSR1 one stays.
        self._previous_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        self.install()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._previous:
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if self._previous_env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = self._previous_env

    def install(self) -> None:
        """(Re)install the handlers: ``ray.init`` replaces the SIGTERM one with its own."""
        if not self._previous:
            return
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def tune_running(self) -> None:
        self._phase = "tune"

    def tune_done(self) -> None:
        self._phase = "after"

    def _handle(self, signum: int, frame: Any) -> None:
        first = self.received is None
        if first:
            self.received = signum
        if self._phase == "before":
            raise SweepInterrupted(signum)
        if self._phase == "after":
            return  # the sweep is writing its table; the exit status will say which signal
        tune_stop = signal.getsignal(_TUNE_STOP_SIGNAL) if _TUNE_STOP_SIGNAL else None
        if first and callable(tune_stop) and tune_stop != self._handle:
            _stop_tune(tune_stop, signum, frame)
            return
        # A second signal, or Tune not listening yet: stop now, without Tune's last save.
        raise SweepInterrupted(self.received or signum)


def _stop_tune(tune_stop: Any, signum: int, frame: Any) -> None:
    """Ask Tune to stop as Ctrl-C does (its own handler: save, stop the trials, return)."""
    # A trial stopped with its last result or error still in flight leaves a Ray future nobody
    # reads; Ray would log it as an "Unhandled error" with a traceback at exit. What the trial
    # had to say is in its trial.json already.
    os.environ["RAY_IGNORE_UNHANDLED_ERRORS"] = "1"
    tune_stop(signum, frame)


class RetryPolicy(_TuneCallback):  # type: ignore[misc,valid-type]
    """No retries for a trial whose last report says its failure is not one a retry can fix.

    Tune decides whether to retry a failed trial by comparing its failure count with the trial's
    ``max_failures``; a trial reports the kind of its failure just before it raises, so taking
    ``max_failures`` to 0 here makes Tune record the failure as final. Each start gives the trial
    its retries back: after the user fixed the data, a resumed trial is retried as usual.
    """

    def __init__(self, max_failures: int) -> None:
        self.max_failures = max_failures

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        trial.max_failures = self.max_failures

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        kind = result.get(FAILURE_KIND_KEY)
        if kind is not None and kind != RUN:
            trial.max_failures = 0


class TrialsInFlight(_TuneCallback):  # type: ignore[misc,valid-type]
    """The trials running now (trial id -> trial directory), as Tune starts and ends them."""

    def __init__(self) -> None:
        self.running: dict[str, str] = {}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running[trial.trial_id] = str(trial.path)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.pop(trial.trial_id, None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.pop(trial.trial_id, None)


class StorageWatch(_TuneCallback):  # type: ignore[misc,valid-type]
    """Notice a full disk once, say so once, and stop the sweep the way a signal does.

    Every trial after the first would fail on the same full disk, so the first notice (a trial's
    last report, the table's write, or Tune's own write failing) stops Tune gracefully: finished
    trials stay finished, the others resume later. ``full_at`` is the path, once noticed.
    """

    def __init__(self, location: str, out: TextIO) -> None:
        self.location = location
        self.out = out
        self.full_at: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment (tuner.pkl); a stream cannot be pickled.
        return {**self.__dict__, "out": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.out = self.out or sys.stdout

    def notice(self, path: str | None = None) -> None:
        if self.full_at is not None:
            return
        self.full_at = path or self.location
        print(f"storage full at {self.full_at}: free space there (or pass --storage elsewhere), "
              "then run the same command again to resume; finished trials are kept",
              file=self.out, flush=True)
        tune_stop = signal.getsignal(_TUNE_STOP_SIGNAL) if _TUNE_STOP_SIGNAL else None
        if callable(tune_stop):
            _stop_tune(tune_stop, _TUNE_STOP_SIGNAL, None)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        if result.get(FAILURE_KIND_KEY) == STORAGE:
            self.notice(self.location)


class QuietTuneLogs(logging.Filter):
    """Drop Tune's log records that the sweep's own lines already say better.

    Always: "Failed to fetch metrics" (Tune reading back per-trial metrics for its ResultGrid,
    which the sweep does not use; trials that never reported have none, e.g. on resume). Unless
    verbose: the traceback Tune logs for each failed attempt (the sweep prints the one-line cause;
    the full text is in the trial's trial.json), "Trials did not complete" and Tune's notes on a
    signal (the sweep says what stopped and how to resume), and Tune's own console lines. Once
    the disk is known to be full: every record about it.
    """

    LOGGERS = ("ray.tune.execution.tune_controller", "ray.tune.tune",
               "ray.tune.analysis.experiment_analysis", "ray.tune.execution.experiment_state")
    _NOT_VERBOSE = ("Trial task failed for trial", "Trials did not complete",
                    "Stop signal received", "Experiment has been interrupted")

    def __init__(self, *, verbose: bool, storage: StorageWatch | None = None) -> None:
        super().__init__()
        self.verbose = verbose
        self.storage = storage

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Failed to fetch metrics"):
            return False
        if not self.verbose and message.startswith(self._NOT_VERBOSE):
            return False
        if self.storage is not None and self.storage.full_at is not None:
            error = record.exc_info[1] if record.exc_info else None
            if (error is not None and is_storage_full(error)) or STORAGE_TEXT.search(message):
                return False
        return True

    def __enter__(self) -> QuietTuneLogs:
        for name in self.LOGGERS:
            logging.getLogger(name).addFilter(self)
        # Tune's newer console output prints its own lines per failed attempt ("errored after N
        # iterations ... Error file: ...") even at verbosity 0; the classic reporter at 0 prints
        # nothing, leaving the sweep's one line per event.
        self._previous_output = os.environ.get("RAY_AIR_NEW_OUTPUT")
        if not self.verbose:
            os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
        return self

    def __exit__(self, *exc_info: object) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeFilter(self)
        if self._previous_output is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = self._previous_output
