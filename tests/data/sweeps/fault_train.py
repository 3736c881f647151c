"""The fake trainer (fake_train_gpt.py) with faults on demand, for the fault-table tests.

Settings (environment), on top of fake_train_gpt.py's:
  KILL_AT          "train": rank 0 SIGKILLs itself at step 2 of training;
                   "eval": rank 0 SIGKILLs itself right after `artifact_saved:` (its final
                   evaluation); either only on the first attempt, which MARK_DIR remembers
  MARK_DIR         a folder outside the trial for that memory (the trial renames its run folder)
  DATA_ERROR       1: fail like golf on a bad shard: a traceback ending in a ShardError line
                   naming the file and the fix, exit status 2, on every attempt
  FILL_STORAGE     a folder: rank 0 first writes a ballast file there until the disk is full
"""

import os
import runpy
import signal
import sys
from pathlib import Path

FAKE = Path(__file__).resolve().with_name("fake_train_gpt.py")
rank = int(os.environ.get("RANK", "0"))
kill_at = os.environ.get("KILL_AT", "")
mark_dir = os.environ.get("MARK_DIR", "")


def first_attempt(tag: str) -> bool:
    """True once per tag and MARK_DIR (the file survives the trial's retries)."""
    mark = Path(mark_dir or ".") / f"{tag}.attempted"
    if mark.exists():
        return False
    mark.write_text("1")
    return True


if os.environ.get("DATA_ERROR") == "1":
    if rank == 0:
        os.write(1, b"Traceback (most recent call last):\n"
                    b'  File "golf/train.py", line 1, in <module>\n'
                    b'  File "golf/data.py", line 227, in next_batch\n'
                    b"golf.data.ShardError: shard /data/fineweb_train_000000.bin: token id 5000 at "
                    b"offset 522 is outside the vocabulary (VOCAB_SIZE=1024); rebuild the shard or "
                    b"set VOCAB_SIZE to the tokenizer's\n")
    sys.exit(2)

if os.environ.get("FILL_STORAGE") and rank == 0:
    chunk = b"\0" * (1 << 20)
    try:
        with open(os.path.join(os.environ["FILL_STORAGE"], "ballast.bin"), "ab") as handle:
            while True:
                handle.write(chunk)
                handle.flush()
    except OSError:
        pass  # the disk is full now, as it would be with another job's output

if kill_at and rank == 0 and not os.environ.get("EVAL_ONLY_FROM") and first_attempt(kill_at):
    # Wrap the fake's own line writer: SIGKILL this rank at the chosen moment, as the kernel's
    # OOM killer or a preempted node would, with no chance to clean up.
    real_write = os.write

    def write(fd, data):
        written = real_write(fd, data)
        text = data.decode(errors="replace")
        if (kill_at == "train" and text.startswith("step:2/")) or (
                kill_at == "eval" and text.startswith("artifact_saved:")):
            os.kill(os.getpid(), signal.SIGKILL)
        return written

    os.write = write

sys.argv[1:] = []
runpy.run_path(str(FAKE), run_name="__main__")
