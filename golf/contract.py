"""The names a trial and the service around it agree on (DESIGN.md contract 2), defined once.

golf writes these files and lines; sweeps (and any competitor's trainer that wants the service's
eval-only retry) reads them. Both sides import them from here, so a rename cannot break one side.
"""

from __future__ import annotations

RESULT_FILE = "result.json"
RESULT_SCHEMA = "golf.result/1"
TRAIN_STATE_FILE = "train_state.json"
TRAIN_LOG_FILE = "train.log"
# The one script a submission is (golf writes its bundle under this name into RUN_DIR).
SUBMISSION_SCRIPT = "train_gpt.py"
# train_state.json's key naming the compressed artifact beside it.
ARTIFACT_FILE_KEY = "artifact_file"
# Printed once the artifact and train_state.json are on disk: "artifact_saved: DIR".
ARTIFACT_SAVED_PREFIX = "artifact_saved:"
# Set by the service on a retry: evaluate DIR's artifact instead of training again.
EVAL_ONLY_FROM_ENV = "EVAL_ONLY_FROM"
# The stack and scale a torchrun rank resolves its config from.
PRESET_ENV = "GOLF_PRESET"
SCALE_ENV = "GOLF_SCALE"
# The challenge's cap on code plus compressed model, in decimal bytes.
SIZE_LIMIT_BYTES = 16_000_000
