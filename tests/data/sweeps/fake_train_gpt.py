"""A tiny stand-in for a competitor's train_gpt.py, for the sweep service's tests.

torchrun launches it like the real thing. It reads its settings from the environment and prints
the challenge's log lines (seed, step and val lines, sizes, the final roundtrip metrics) with
numbers that follow from its settings, so a test can check what the service parsed. It also
follows the service's checkpoint protocol: after training it writes an artifact and
train_state.json into its working directory and prints `artifact_saved: DIR`; started with
EVAL_ONLY_FROM=DIR it skips training and evaluates that artifact.

Settings (environment): SEED, ITERATIONS (6), LR (0.3), VAL_EVERY (3), STEP_SECONDS (0.05),
  FAIL_AT_STEP     exit with status 3 at this step
  FAIL_EVAL_ONCE   1: exit with status 4 right after `artifact_saved:` unless EVAL_ONLY_FROM is set
  SILENT_AFTER     stop printing and sleep for ever after this step (a rank stuck in a collective)
  PID_DIR          every rank writes its pid to PID_DIR/rank<RANK>-<PID>.pid (to look for orphans)
Every rank prints one `rank_env:` line with its LOCAL_RANK and CUDA_VISIBLE_DEVICES.
"""

import json
import math
import os
import sys
import time

rank = int(os.environ.get("RANK", "0"))
local_rank = int(os.environ.get("LOCAL_RANK", "0"))
world = int(os.environ.get("WORLD_SIZE", "1"))
seed = int(os.environ.get("SEED", "1337"))
iterations = int(os.environ.get("ITERATIONS", "6"))
lr = float(os.environ.get("LR", "0.3"))
val_every = int(os.environ.get("VAL_EVERY", "3"))
step_seconds = float(os.environ.get("STEP_SECONDS", "0.05"))
fail_at = int(os.environ.get("FAIL_AT_STEP", "-1"))
silent_after = int(os.environ.get("SILENT_AFTER", "-1"))
eval_only_from = os.environ.get("EVAL_ONLY_FROM", "")
TOKENS_PER_BYTE = 0.41

if os.environ.get("PID_DIR"):
    with open(os.path.join(os.environ["PID_DIR"], f"rank{rank}-{os.getpid()}.pid"), "w") as handle:
        handle.write(str(os.getpid()))



def say(text):
    # One write per line: ranks share torchrun's stdout, and print() writes the newline apart.
    os.write(1, (text + "\n").encode())


say(f"rank_env: rank:{rank} local_rank:{local_rank} world_size:{world} "
    f"cuda_visible_devices:{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}")


def log(text):
    if rank == 0:
        say(text)


def val_loss_at(step):
    return 4.0 + 2.5 * math.exp(-lr * step) + (seed % 97) / 1000.0


def train():
    log(f"seed:{seed}")
    start = time.perf_counter()
    for step in range(iterations + 1):
        if step == fail_at:
            log(f"RuntimeError: fake failure at step {step} (FAIL_AT_STEP={fail_at})")
            sys.exit(3)
        elapsed_ms = (time.perf_counter() - start) * 1000
        avg = elapsed_ms / max(step, 1)
        if step > 0:
            log(f"step:{step}/{iterations} train_loss:{val_loss_at(step) + 0.05:.4f} "
                f"train_time:{elapsed_ms:.0f}ms step_avg:{avg:.2f}ms")
        if step == iterations or step % val_every == 0:
            loss = val_loss_at(step)
            log(f"step:{step}/{iterations} val_loss:{loss:.4f} "
                f"val_bpb:{loss / math.log(2) * TOKENS_PER_BYTE:.4f} "
                f"train_time:{elapsed_ms:.0f}ms step_avg:{avg:.2f}ms")
        if step == silent_after:
            while True:
                time.sleep(1)
        if step < iterations:
            time.sleep(step_seconds)
    final = val_loss_at(iterations) + 0.01
    if rank == 0:
        artifact = f"fake model seed={seed} lr={lr} final={final!r}\n".encode() * 1000
        with open("model.bin", "wb") as handle:
            handle.write(artifact)
        with open("train_state.json", "w") as handle:
            json.dump({"artifact_file": "model.bin", "final_val_loss": final, "steps": iterations}, handle)
    log(f"artifact_saved: {os.getcwd()}")
    if os.environ.get("FAIL_EVAL_ONCE") == "1":
        log("RuntimeError: simulated node loss during evaluation (FAIL_EVAL_ONCE=1)")
        sys.exit(4)
    return final, len(artifact) if rank == 0 else 0


if eval_only_from:
    with open(os.path.join(eval_only_from, "train_state.json")) as handle:
        state = json.load(handle)
    model_bytes = os.path.getsize(os.path.join(eval_only_from, state["artifact_file"]))
    final = state["final_val_loss"]
    log(f"eval_only: artifact {state['artifact_file']} from {eval_only_from}")
else:
    final, model_bytes = train()
code_bytes = os.path.getsize(__file__)
bpb = final / math.log(2) * TOKENS_PER_BYTE
log(f"Serialized model int8+zlib: {model_bytes} bytes")
log(f"Code size: {code_bytes} bytes")
log(f"Total submission size int8+zlib: {model_bytes + code_bytes} bytes")
log(f"final_int8_zlib_roundtrip val_loss:{final:.4f} val_bpb:{bpb:.4f} eval_time:12ms")
log(f"final_int8_zlib_roundtrip_exact val_loss:{final:.8f} val_bpb:{bpb:.8f}")
