"""The ``golf data`` command: ``golf data demo`` and ``golf data fineweb``.

Parsing and messages only; the work is :func:`golf.corpus.demo.build_demo` and
:func:`golf.corpus.fineweb.fetch_fineweb`. A failure prints one line on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from golf.corpus.demo import (
    DEMO_DATASET, DEMO_SEED, DEMO_SOURCE_DESCRIPTION, DEMO_TOKENIZER, DEMO_VAL_FRACTION, DEMO_VOCAB_SIZE,
    CorpusError, build_demo,
)
from golf.corpus.fineweb import DEFAULT_TRAIN_SHARDS, FINEWEB_VARIANTS, FetchError, fetch_fineweb
from golf.data import ShardError

_DEMO_HELP = f"""\
Build the embedded demo corpus: offline, deterministic, a few seconds on 2 cores.

Source: {DEMO_SOURCE_DESCRIPTION}.
Documents are shuffled with seed {DEMO_SEED}; ~{DEMO_VAL_FRACTION:.0%} go to validation. A SentencePiece BPE
tokenizer with {DEMO_VOCAB_SIZE} pieces, trained on the training documents with the challenge tokenizer's
settings, encodes each document as [bos] + ids into challenge-format shards:

  DIR/datasets/{DEMO_DATASET}/fineweb_train_*.bin, fineweb_val_*.bin, manifest.json
  DIR/tokenizers/{DEMO_TOKENIZER}

A second call reuses a valid build; another Python installation (other sources) rebuilds.
"""

_FINEWEB_HELP = """\
Fetch the challenge's pre-tokenized FineWeb shards and tokenizer from Hugging Face into
DIR/datasets/fineweb10B_<variant>/ and DIR/tokenizers/ (the challenge's own layout). Every
validation shard is fetched; training shards 0..N-1 of 100M tokens (~200 MB) each. Files already
present and valid are kept, so re-running resumes and needs no network once complete.

Variants:
{variants}

Offline (or with HF_HUB_OFFLINE=1) it stops at once and says which files to copy where.
"""


_OUT_HELP = "folder that receives datasets/ and tokenizers/ (default: ./data)"


def _report_error(command: str, exc: BaseException) -> int:
    print(f"golf data {command}: error: {exc}", file=sys.stderr)
    return 2


def run_demo_command(args: argparse.Namespace) -> int:
    """Handler of ``golf data demo``: 0 on success, 2 with a message on stderr on failure."""
    try:
        build_demo(args.out, vocab_size=args.vocab)
    except (CorpusError, ShardError, OSError) as exc:
        return _report_error("demo", exc)
    return 0


def run_fineweb_command(args: argparse.Namespace) -> int:
    """Handler of ``golf data fineweb``: 0 on success, 2 with a message on stderr on failure."""
    try:
        fetch_fineweb(args.variant, args.train_shards, args.out, repo_id=args.repo_id)
    except (FetchError, CorpusError, ValueError, OSError) as exc:
        return _report_error("fineweb", exc)
    return 0


def add_data_commands(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``data`` with its sub-commands ``demo`` and ``fineweb`` (each sets ``func``)."""
    data = subparsers.add_parser(
        "data",
        help="build the demo corpus or fetch the challenge's FineWeb shards",
        description="Token shards and tokenizers for training and evaluation.",
    )
    commands = data.add_subparsers(dest="data_command", metavar="{demo,fineweb}")
    commands.required = True
    demo = commands.add_parser(
        "demo",
        help="build the offline demo corpus from the Python standard library's text (seconds)",
        description=_DEMO_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--out", default="data", metavar="DIR", help=_OUT_HELP)
    demo.add_argument(
        "--vocab", type=int, default=DEMO_VOCAB_SIZE, metavar="N",
        help=f"tokenizer pieces (default {DEMO_VOCAB_SIZE}); another size goes to DIR/datasets/demo_sp<N>/ and "
        "DIR/tokenizers/demo_<N>_bpe.model: train with VOCAB_SIZE=N DATA_PATH=... TOKENIZER_PATH=...",
    )
    demo.set_defaults(func=run_demo_command)

    variants = "\n".join(f"  {v.name}  {v.repo_id:<28} {v.about}" for v in FINEWEB_VARIANTS.values())
    fineweb = commands.add_parser(
        "fineweb",
        help="fetch the challenge's FineWeb shards and tokenizer from Hugging Face",
        description=_FINEWEB_HELP.format(variants=variants),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fineweb.add_argument(
        "--variant", default="sp1024", choices=sorted(FINEWEB_VARIANTS), help="tokenizer family (default: sp1024)"
    )
    fineweb.add_argument(
        "--train-shards",
        type=int,
        default=DEFAULT_TRAIN_SHARDS,
        metavar="N",
        help=f"training shards to fetch, 100M tokens each (default: {DEFAULT_TRAIN_SHARDS}, as the challenge's "
        "script; the baseline's 10-minute 8xH100 run reads 13,780 x 524,288 = 7.2B tokens)",
    )
    fineweb.add_argument("--out", default="data", metavar="DIR", help=_OUT_HELP)
    fineweb.add_argument(
        "--repo-id", default=None, help="Hugging Face dataset repository to read instead of the variant's"
    )
    fineweb.set_defaults(func=run_fineweb_command)


def main(argv: list[str] | None = None) -> int:
    """``python -m golf.corpus data {demo,fineweb} ...``: the same commands as ``golf data``."""
    parser = argparse.ArgumentParser(prog="python -m golf.corpus", description="golf data commands")
    add_data_commands(parser.add_subparsers(dest="command", metavar="data", required=True))
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.func
    return handler(args)
