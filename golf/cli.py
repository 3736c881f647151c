"""The ``golf`` command: build data, train one run, benchmark a preset, write a submission's code.

``golf train`` and ``golf bench`` validate the configuration first (no compute is spent on a typo),
then run the pipeline as a child process: ``python -m golf.train`` for one process, ``torchrun
--standalone`` for several. ``golf bundle`` writes the one-file train_gpt.py a run of a config
submits (:mod:`golf.bundle`).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from golf.config import PRESET_ENV, SCALE_ENV, ConfigError, describe_fields, resolve, validate
from golf.contract import SUBMISSION_SCRIPT
from golf.data import DataError
from golf.presets import SCALES, preset_names, resolve_names
from golf.techniques.catalog import ToggleRow

EXAMPLES = """examples:
  golf data demo                              build the embedded demo corpus into ./data
  golf train --preset smoke                   a CPU-sized run on the demo corpus (seconds)
  golf train --preset smoke QAT_ENABLED=1 QUANT_FORMAT=int6 COMPRESSOR=zstd
  golf train --preset baseline --nproc-per-node 8   the reference run on 8 GPUs (FineWeb data)
  golf bench --preset baseline --nproc-per-node 1   ms/step, tokens/s and MFU of one GPU
  golf train --list-config                    every setting, its default and meaning
  golf toggles                                every technique toggle (docs/TOGGLES.md)
  golf bundle --preset smoke --out run/train_gpt.py   the submitted script of a config
"""


def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    """KEY=VALUE words -> dict, with a clear error for anything else."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{item!r} is not a KEY=VALUE setting: write it like QAT_ENABLED=1")
        out[key.strip()] = value
    return out


def default_nproc() -> int:
    try:
        import torch

        return max(torch.cuda.device_count(), 1)
    except Exception:  # noqa: BLE001 - no torch/CUDA: one CPU process
        return 1


def module_command(module: str, nproc: int, args: Sequence[str] = ()) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", module, *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", module, *args]


def run_child(command: list[str], env: dict[str, str]) -> int:
    """Run the pipeline, passing Ctrl-C/SIGTERM on so it can record how it stopped."""
    child = subprocess.Popen(command, env=env)

    def forward(signum: int, frame: object) -> None:
        child.send_signal(signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:
                child.send_signal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)


def prepare_run(args: argparse.Namespace, *, check_data: bool = False) -> tuple[dict[str, str], int]:
    """Validated child environment and process count for ``train``/``bench``.

    ``check_data``: also check the shards and tokenizer (:func:`golf.preflight.preflight`) here,
    so a bad shard is one line from this process instead of a failure report from torchrun.
    """
    stack, scale = resolve_names(args.preset, args.scale)
    overrides = parse_assignments(args.settings)
    cfg = resolve(stack, scale, overrides=overrides, environ=os.environ)
    nproc = args.nproc_per_node or default_nproc()
    validate(cfg, world_size=nproc)
    ensure_demo_data(cfg.data_path, cfg.tokenizer_path)
    if check_data:
        from golf.preflight import preflight

        preflight(cfg)
    env = dict(os.environ)
    env.update(cfg.to_env())
    env[PRESET_ENV], env[SCALE_ENV] = stack, scale
    return env, nproc


def ensure_demo_data(data_path: str, tokenizer_path: str) -> None:
    """Build the embedded demo corpus on first use when a run points at its (missing) location."""
    import re

    from golf.corpus import build_demo
    from golf.corpus.demo import demo_names

    data, tok = Path(data_path), Path(tokenizer_path)
    match = re.fullmatch(r"demo_sp(\d+)", data.name)
    if match is None or tok.name != demo_names(int(match.group(1)))[1] or (data.exists() and tok.exists()):
        return
    root = data.parent.parent
    if tok.parent.parent.resolve() != root.resolve():
        return  # a custom layout: the run's own checks will name what is missing
    build_demo(root, vocab_size=int(match.group(1)))


def cmd_train(args: argparse.Namespace) -> int:
    if args.list_config:
        print(describe_fields())
        return 0
    env, nproc = prepare_run(args, check_data=True)
    return run_child(module_command("golf.train", nproc), env)


def cmd_bench(args: argparse.Namespace) -> int:
    env, nproc = prepare_run(args)
    extra = ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    if args.peak_tflops:
        extra += ["--peak-tflops", str(args.peak_tflops)]
    if args.json:
        extra += ["--json", str(args.json)]
    return run_child(module_command("golf.bench", nproc, extra), env)


def cmd_bundle(args: argparse.Namespace) -> int:
    from golf.bundle import build_bundle

    stack, scale = resolve_names(args.preset, args.scale)
    overrides = parse_assignments(args.settings)
    if args.selfextract:
        overrides["CODE_WRAPPER"] = "lzma_b85"
    cfg = resolve(stack, scale, overrides=overrides, environ=os.environ)
    validate(cfg, world_size=1, check_runtime=False)
    bundle = build_bundle(cfg, stack, scale)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(bundle.data)
    print(f"wrote {args.out}: {len(bundle.data)} bytes ({bundle.wrapper}), {len(bundle.modules)} golf modules, "
          f"techniques: {', '.join(bundle.techniques) or 'none'}; left out: {', '.join(bundle.left_out) or 'none'}")
    return 0


def format_toggles(rows: list[ToggleRow], markdown: bool) -> str:
    """The toggle catalogue as a Markdown table (one per technique) or plain text."""
    out: list[str] = []
    for technique in dict.fromkeys(row.technique for row in rows):
        own = [row for row in rows if row.technique == technique]
        head = f"{technique}: {own[0].title} (techniques.md {own[0].spec})"
        if markdown:
            out += [f"### {head}", "", "| variable | aliases | default | meaning |", "|---|---|---|---|"]
            for row in own:
                escaped_bar = " \\| "  # a bare | would end the table cell
                meaning = row.meaning + (f" [{escaped_bar.join(row.choices)}]" if row.choices else "")
                switch = " **(switch)**" if row.is_switch else ""
                out.append(f"| `{row.variable}`{switch} | {', '.join(f'`{a}`' for a in row.aliases)} | "
                           f"`{row.default}` | {meaning} |")
        else:
            out.append(head)
            for row in own:
                aliases = f" (alias {', '.join(row.aliases)})" if row.aliases else ""
                choices = f" [{'|'.join(row.choices)}]" if row.choices else ""
                mark = "*" if row.is_switch else " "
                out.append(f" {mark} {row.variable + aliases:<48} default {row.default:<10} {row.meaning}{choices}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def cmd_toggles(args: argparse.Namespace) -> int:
    from golf.techniques.catalog import toggle_rows

    text = format_toggles(toggle_rows(), args.markdown)
    if args.markdown:
        text = TOGGLES_PREAMBLE + text
    sys.stdout.write(text)
    return 0


TOGGLES_PREAMBLE = """# Technique toggles

Generated by `golf toggles --markdown` from the technique registry and the config; do not edit by
hand (a test checks this file is current). Every variable is also accepted as a `KEY=VALUE` word of
`golf train` and as a sweep key; `golf train --list-config` lists the pipeline's own settings too.

"""


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="baseline", help=f"technique stack: {', '.join(preset_names())} (default baseline)")
    p.add_argument("--scale", default=None, help=f"run size: {', '.join(SCALES)} (default full; the smoke preset implies smoke)")
    p.add_argument("--nproc-per-node", type=int, default=0, metavar="N",
                   help="processes (GPUs) to use; default: every visible GPU, or 1 on CPU")
    p.add_argument("settings", nargs="*", metavar="KEY=VALUE", help="any config setting, e.g. QAT_ENABLED=1")


def build_parser() -> argparse.ArgumentParser:
    from golf.corpus.cli import add_data_commands

    parser = argparse.ArgumentParser(
        prog="golf", description="The Parameter Golf pipeline: data -> train -> quantize -> evaluate.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_data_commands(sub)
    train = sub.add_parser(
        "train", help="train, export and evaluate one run",
        description="Train one run on this machine and write RUN_DIR/{train.log,result.json,artifact}. "
        "Settings come from --preset/--scale, then the environment, then KEY=VALUE words.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_options(train)
    train.add_argument("--list-config", action="store_true", help="print every setting and exit")
    train.set_defaults(func=cmd_train)
    bench = sub.add_parser(
        "bench", help="measure ms/step, tokens/s and (on CUDA) MFU of a preset",
        description="Time optimizer steps of a preset on synthetic tokens (no data needed) and compare "
        "with the reference run's 43.54 ms/step (baseline, 8xH100, 524,288 tokens per step).",
    )
    add_run_options(bench)
    bench.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    bench.add_argument("--warmup", type=int, default=5, help="untimed steps first: compile, autotune (default 5)")
    bench.add_argument("--peak-tflops", type=float, default=0.0,
                       help="accelerator peak bf16 TFLOP/s for MFU when the device is not in the built-in table")
    bench.add_argument("--json", type=Path, default=None, help="also write the measurements to this JSON file")
    bench.set_defaults(func=cmd_bench)
    bundle = sub.add_parser(
        "bundle", help="write the self-contained train_gpt.py of a config (the submitted code)",
        description="Write one train_gpt.py holding the golf code a run of this config needs (techniques "
        "that are off left out, docstrings and comments stripped). `python train_gpt.py` or torchrun "
        "with the same environment reruns it; its size is the run's code bytes.",
    )
    bundle.add_argument("--preset", default="baseline", help=f"technique stack: {', '.join(preset_names())} (default baseline)")
    bundle.add_argument("--scale", default=None, help=f"run size: {', '.join(SCALES)} (default full; the smoke preset implies smoke)")
    bundle.add_argument("--out", type=Path, default=Path(SUBMISSION_SCRIPT), help=f"where to write it (default ./{SUBMISSION_SCRIPT})")
    bundle.add_argument("--selfextract", action="store_true",
                        help="wrap it as a self-extracting LZMA script (CODE_WRAPPER=lzma_b85, as #1260)")
    bundle.add_argument("settings", nargs="*", metavar="KEY=VALUE", help="any config setting, e.g. QAT_ENABLED=1")
    bundle.set_defaults(func=cmd_bundle)
    toggles = sub.add_parser(
        "toggles", help="list every technique toggle: variable, aliases, default, meaning, spec section",
        description="The catalogue of technique toggles, generated from the technique registry.",
    )
    toggles.add_argument("--markdown", action="store_true", help="as the Markdown page docs/TOGGLES.md")
    toggles.set_defaults(func=cmd_toggles)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (ConfigError, DataError) as err:
        print(f"golf: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
