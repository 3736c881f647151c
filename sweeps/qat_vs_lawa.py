"""QAT vs LAWA: does int6 quantization-aware training still help once LAWA averages the weights?

Four configs, QAT {off, on} x LAWA {off, on}, each on seeds 1337, 42 and 2024. All four export
int6 + zstd, so the two toggles are the only difference between them; the all-off config is the
baseline every other config is tested against (Welch, one-sided, per-seed val_bpb).

    python sweeps/qat_vs_lawa.py                 # this machine: local Ray, smoke scale, CPU
    python sweeps/qat_vs_lawa.py --dry-run       # validate the 12 trials and list them
    ray job submit --working-dir . -- python sweeps/qat_vs_lawa.py --scale full

Every trial runs to the end (no scheduler): seed-for-seed comparisons need complete seeds.
"""

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # `python sweeps/qat_vs_lawa.py` puts sweeps/ itself first on sys.path, where its modules
    # would shadow top-level ones; the repository root is what must be importable.
    _here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != _here]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweeps import Sweep, main  # noqa: E402

SWEEP = Sweep(
    name="qat_vs_lawa",
    description=__doc__.splitlines()[0],
    preset="baseline",
    fixed={"QUANT_FORMAT": "int6", "COMPRESSOR": "zstd"},
    grid={"QAT_ENABLED": [0, 1], "LAWA_ENABLED": [0, 1]},
    seeds=[1337, 42, 2024],
    baseline={"QAT_ENABLED": 0, "LAWA_ENABLED": 0},
)

if __name__ == "__main__":
    raise SystemExit(main(SWEEP))
