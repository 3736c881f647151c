"""The submission bundle (techniques.md 3.8): one self-contained ``train_gpt.py`` for a config.

A challenge submission is one script, and its UTF-8 bytes count against the 16,000,000-byte limit.
The bundle holds exactly the golf modules a run of the config imports, with every technique that
the config leaves off taken out of the registry (and its module out of the file), minified
(docstrings, comments and type-checking-only imports stripped; names kept). Optionally it is
wrapped as a self-extracting script (LZMA2 + base85 + exec, as #1260 shipped), which is what
counts then.

The bundle runs like ``golf train`` with the same environment (``python train_gpt.py`` or
``torchrun ... train_gpt.py``): the config's preset and scale are its presets, the user's own
settings are its defaults (the environment still wins), and a setting of a technique it left out
stops it with a clear error unless the value is the one it was built with.
"""

from __future__ import annotations

import ast
import base64
import functools
import lzma
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import golf
from golf.config import FIELD_SPECS, GolfConfig, resolve
from golf.knobs import Checks
from golf.techniques import TECHNIQUES, Technique

ENTRY_MODULES = ("golf.train", "golf.config")
REGISTRY_MODULE = "golf.techniques"
PRESETS_MODULE = "golf.presets"
# The builder and its CLI are never part of a bundle: a bundle copies itself.
NOT_BUNDLED = ("golf.bundle", "golf.cli")


@dataclass(frozen=True)
class Bundle:
    """A built bundle: the file's bytes and what went into it."""

    data: bytes
    modules: tuple[str, ...]
    techniques: tuple[str, ...]
    left_out: tuple[str, ...]
    wrapper: str


def build_bundle(cfg: GolfConfig, stack: str, scale: str) -> Bundle:
    """The ``train_gpt.py`` for ``cfg`` run under preset ``stack`` at ``scale`` (deterministic:
    the same config always gives the same bytes)."""
    from golf.presets import SHORTHANDS, preset_values

    baseline = resolve(stack, scale)
    kept = kept_techniques(cfg, baseline)
    kept_fields = _core_fields()
    for technique in kept:
        kept_fields.update(technique.knob_names())
    generated = {
        REGISTRY_MODULE: registry_source(kept),
        PRESETS_MODULE: presets_source(stack, scale, preset_values(stack, scale), SHORTHANDS, kept_fields),
    }
    sources = module_sources(generated)
    entry = entry_source(
        sources, settings=_user_settings(cfg, baseline), left_out=_left_out_knobs(cfg, kept_fields),
        title=f"golf {golf.__version__} bundle: preset {stack}, scale {scale}; "
        f"techniques {','.join(t.name for t in kept) or 'none'}",
    )
    data = entry.encode("utf-8")
    if cfg.code_wrapper == "lzma_b85":
        data = self_extracting(data)
    left_out = tuple(t.name for t in TECHNIQUES if t not in kept)
    return Bundle(data, tuple(sorted(sources)), tuple(t.name for t in kept), left_out, cfg.code_wrapper)


# --- which techniques go in -----------------------------------------------------------------------
def kept_techniques(cfg: GolfConfig, baseline: GolfConfig) -> list[type[Technique]]:
    """The techniques a run of ``cfg`` needs, in registry order.

    A technique goes in when it is on; when its checks have anything to say about this config (so
    the bundle logs the same warnings); or when code that goes in reads one of its knobs (the LR
    schedule reads LrSchedule's knobs whether or not a warmdown shape is chosen). The last rule is
    applied until nothing changes, since a technique brought in may read another's knobs.
    """
    kept = [t for t in TECHNIQUES if t.is_enabled(cfg) or _has_checks_to_report(t, cfg, baseline)]
    while True:
        sources = module_sources({REGISTRY_MODULE: registry_source(kept)})
        # the bundle's presets hold the values of kept knobs only, so they bring nothing in
        referenced = _names_used(s for name, s in sources.items() if name != PRESETS_MODULE)
        more = [t for t in TECHNIQUES if t not in kept and referenced.intersection(t.knob_names())]
        if not more:
            return kept
        kept = [t for t in TECHNIQUES if t in kept or t in more]


def _has_checks_to_report(technique: type[Technique], cfg: GolfConfig, baseline: GolfConfig) -> bool:
    checks = Checks(baseline=baseline)
    technique.check(cfg, 1, checks)
    return bool(checks.errors or checks.warnings)


def _names_used(sources: Iterable[str]) -> set[str]:
    """Attribute names and string constants in ``sources``: every way golf code reads a knob
    (``cfg.lr_floor``, ``getattr(cfg, "lr_floor")``, ``field_spec("lr_floor")``)."""
    names: set[str] = set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.add(node.value)
    return names


def _core_fields() -> set[str]:
    technique_fields = {name for t in TECHNIQUES for name in t.knob_names()}
    return {spec.name for spec in FIELD_SPECS} - technique_fields


# --- generated modules ----------------------------------------------------------------------------
def registry_source(kept: list[type[Technique]]) -> str:
    """golf/techniques/__init__.py with the techniques not in ``kept`` taken out of its imports
    and of ``TECHNIQUES``."""
    path = _module_path(REGISTRY_MODULE)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    dropped = {t.__name__ for t in TECHNIQUES if t not in kept}
    body: list[ast.stmt] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(REGISTRY_MODULE + "."):
            node.names = [alias for alias in node.names if alias.name not in dropped]
            if not node.names:
                continue
        elif _assigns(node, "TECHNIQUES"):
            value = node.value
            if not isinstance(value, ast.Tuple):
                raise ValueError(f"{path}: TECHNIQUES is not a tuple literal; the bundle cannot filter it")
            value.elts = [e for e in value.elts if not (isinstance(e, ast.Name) and e.id in dropped)]
        body.append(node)
    tree.body = body
    return ast.unparse(tree) + "\n"


def _assigns(node: ast.stmt, name: str) -> bool:
    if isinstance(node, ast.AnnAssign):
        return isinstance(node.target, ast.Name) and node.target.id == name
    if isinstance(node, ast.Assign):
        return any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
    return False


def presets_source(stack: str, scale: str, values: dict[str, Any], shorthands: dict[str, tuple[str, str]],
                   kept_fields: set[str]) -> str:
    """A golf.presets that knows one preset: the one the bundle was built for."""
    values = {k: v for k, v in values.items() if k in kept_fields}
    names = {k: v for k, v in shorthands.items() if v == (stack, scale)}
    return f'''from golf.config import ConfigError
STACK, SCALE = {stack!r}, {scale!r}
SHORTHANDS = {names!r}
VALUES = {values!r}

def resolve_names(preset, scale):
    preset = (preset or STACK).strip()
    stack, implied = SHORTHANDS.get(preset, (preset, None))
    scale = (scale or implied or SCALE).strip()
    if (stack, scale) != (STACK, SCALE):
        raise ConfigError(f"this train_gpt.py was built for preset {{STACK}} at scale {{SCALE}}, not {{stack}} at {{scale}}: build one with `golf bundle --preset {{stack}} --scale {{scale}}`")
    return STACK, SCALE

def preset_values(preset, scale):
    resolve_names(preset, scale)
    return dict(VALUES)
'''


def _user_settings(cfg: GolfConfig, baseline: GolfConfig) -> dict[str, str]:
    """The config's own settings over its preset, as environment defaults of the bundle; where and
    how a run executes (paths, run id, device) and its seed stay the environment's, so the seeds
    of one config share one script (``SEED=42 torchrun ... train_gpt.py``)."""
    from golf.train import RUNTIME_FIELDS

    per_run = {*RUNTIME_FIELDS, "seed"}
    return {spec.env: spec.format(getattr(cfg, spec.name)) for spec in FIELD_SPECS
            if spec.name not in per_run and getattr(cfg, spec.name) != getattr(baseline, spec.name)}


def _left_out_knobs(cfg: GolfConfig, kept_fields: set[str]) -> dict[str, tuple[str, str, Any, tuple[str, ...]]]:
    """Every knob the bundle leaves out, by canonical name -> (technique, type, the value it was
    built with, aliases)."""
    owner = {name: t.name for t in TECHNIQUES for name in t.knob_names()}
    return {spec.env: (owner[spec.name], spec.type.__name__, getattr(cfg, spec.name), spec.aliases)
            for spec in FIELD_SPECS if spec.name not in kept_fields}


# --- modules and their sources ----------------------------------------------------------------------
def _module_path(name: str) -> Path:
    root = Path(golf.__file__).resolve().parent.parent
    base = root.joinpath(*name.split("."))
    package = base / "__init__.py"
    return package if package.is_file() else base.with_suffix(".py")


def _is_module(name: str) -> bool:
    root = Path(golf.__file__).resolve().parent.parent
    base = root.joinpath(*name.split("."))
    return (base / "__init__.py").is_file() or base.with_suffix(".py").is_file()


def module_sources(generated: dict[str, str]) -> dict[str, str]:
    """Minified source of every golf module the entry modules import, directly or not (imports
    inside functions count; imports only for type checkers do not), by module name; ``generated``
    replaces a module's file."""
    sources: dict[str, str] = {}
    todo = list(ENTRY_MODULES)
    while todo:
        name = todo.pop()
        if name in sources or name in NOT_BUNDLED:
            continue
        if name in generated:
            source = minify(generated[name])
        elif _is_module(name):
            source = minify(_module_path(name).read_text(encoding="utf-8"))
        else:
            raise ValueError(f"{name} is imported but is not a golf module")
        sources[name] = source
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run first
        todo += [m for m in _imported_golf_modules(source) if m not in sources]
    return dict(sorted(sources.items()))


# Pure functions of a module's text, cached: a sweep plan bundles dozens of configs that share modules.
@functools.lru_cache(maxsize=None)
def _imported_golf_modules(source: str) -> tuple[str, ...]:
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name == "golf" or a.name.startswith("golf.")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                node.module == "golf" or node.module.startswith("golf.")):
            found.append(node.module)
            # `from golf.quant import container` imports a module, not a name
            found += [f"{node.module}.{a.name}" for a in node.names if _is_module(f"{node.module}.{a.name}")]
    return tuple(found)


@functools.lru_cache(maxsize=None)
def minify(source: str) -> str:
    """``source`` without docstrings, comments, ``if TYPE_CHECKING:`` imports and the annotations
    of function arguments and results (nothing in golf reads them; dataclass fields keep theirs),
    indented by one space; the same program (checked: its syntax tree equals the stripped
    original's)."""
    tree = _strip(ast.parse(source))
    plain = ast.unparse(tree)
    # ast.unparse indents by four spaces and writes every string literal on one line, so leading
    # spaces are indentation only and can be shortened.
    lines = []
    for line in plain.splitlines():
        body = line.lstrip(" ")
        lines.append(" " * ((len(line) - len(body)) // 4) + body)
    short = "\n".join(lines) + "\n"
    if ast.dump(ast.parse(short)) != ast.dump(ast.parse(plain)):
        return plain + "\n"
    return short


def _strip(tree: ast.Module) -> ast.Module:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.returns = None
            signature = node.args
            for arg in (*signature.posonlyargs, *signature.args, *signature.kwonlyargs,
                        signature.vararg, signature.kwarg):
                if arg is not None:
                    arg.annotation = None
        for attr in ("body", "orelse", "finalbody"):
            block = getattr(node, attr, None)
            if not isinstance(block, list) or not block or not isinstance(block[0], ast.stmt):
                continue
            kept = [s for s in block if not _is_string_statement(s) and not _is_type_checking_block(s)]
            setattr(node, attr, kept or ([] if attr != "body" else [ast.Pass()]))
    return tree


def _is_string_statement(node: ast.stmt) -> bool:
    # docstrings, and the attribute docstrings after dataclass fields: a bare string does nothing
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _is_type_checking_block(node: ast.stmt) -> bool:
    return (isinstance(node, ast.If) and not node.orelse and isinstance(node.test, ast.Name)
            and node.test.id == "TYPE_CHECKING")


# --- the file -------------------------------------------------------------------------------------
_IMPORTER = '''import linecache, os, sys
from importlib.abc import Loader, MetaPathFinder
from importlib.util import spec_from_loader

class BundleImporter(MetaPathFinder, Loader):
 def find_spec(self, name, path=None, target=None):
  if name in SOURCES:
   return spec_from_loader(name, self, is_package=name in PACKAGES)
  if name == "golf" or name.startswith("golf."):
   raise ModuleNotFoundError(f"{name} is not part of this train_gpt.py", name=name)
 def create_module(self, spec):
  return None
 def exec_module(self, module):
  name, source = f"train_gpt.py:{module.__name__}", SOURCES[module.__name__]
  linecache.cache[name] = (len(source), None, source.splitlines(True), name)  # tracebacks, inspect
  exec(compile(source, name, "exec"), module.__dict__)

def prepare_environment():
 from golf.config import ConfigError, FieldSpec, field_spec
 types = {"bool": bool, "int": int, "float": float, "str": str}
 for env, (technique, kind, value, aliases) in LEFT_OUT.items():
  spec = FieldSpec(env, env, aliases, types[kind], value, "", None, None, None)
  for key in (env, *aliases):
   if key not in os.environ:
    continue
   try:
    same = spec.parse(os.environ[key], "environment") == value
   except ConfigError:
    same = False
   if not same:
    raise ConfigError(f"{key}={os.environ[key]} sets {technique}, which this train_gpt.py leaves out (built with {env}={spec.format(value)}): build one with `golf bundle ... {env}={os.environ[key]}`")
   del os.environ[key]
 for env, value in SETTINGS.items():
  spec = field_spec(env)
  if not any(k in os.environ for k in (spec.env, *spec.aliases)):
   os.environ[env] = value

if __name__ == "__main__":
 sys.meta_path.insert(0, BundleImporter())
 import golf
 golf.__bundle__ = os.path.abspath(__file__)
 from golf.config import ConfigError
 try:
  prepare_environment()
 except ConfigError as err:
  if os.environ.get("RANK", "0") == "0":
   print(f"train_gpt.py: {err}", file=sys.stderr)
  sys.exit(2)
 from golf.train import main
 sys.exit(main())
'''


def entry_source(sources: dict[str, str], *, settings: dict[str, str], left_out: dict[str, Any], title: str) -> str:
    """The plain bundle: the modules' sources as strings, the importer that serves them, the
    bundle's settings, and the call of golf.train's main."""
    packages = sorted(name for name in sources if _module_path(name).name == "__init__.py")
    parts = [f"# {title}\n", "SOURCES = {\n"]
    for name, source in sources.items():
        parts.append(f'{name!r}: """{_triple_quoted(source)}""",\n')
    parts.append("}\n")
    parts.append(f"PACKAGES = {tuple(packages)!r}\n")
    parts.append(f"SETTINGS = {settings!r}\n")
    parts.append(f"LEFT_OUT = {left_out!r}\n")
    parts.append(_IMPORTER)
    text = "".join(parts)
    ast.parse(text)  # a bundle that does not parse is a bug here, not the user's
    return text


def _triple_quoted(source: str) -> str:
    """``source`` escaped for a plain \"\"\"...\"\"\" literal: backslashes doubled, quote runs broken."""
    return source.replace("\\", "\\\\").replace('"""', '""\\"')


def self_extracting(plain: bytes) -> bytes:
    """``plain`` as LZMA2 (raw, preset 9|extreme) + base85, decoded and exec'd: #1260's wrapper."""
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
    packed = base64.b85encode(lzma.compress(plain, format=lzma.FORMAT_RAW, filters=filters)).decode("ascii")
    return (
        "import base64, lzma\n"
        f"exec(compile(lzma.decompress(base64.b85decode({packed!r}), format=lzma.FORMAT_RAW, "
        f"filters={filters!r}), __file__, 'exec'))\n"
    ).encode("utf-8")
