"""A release recipe: TOML, validated into typed dataclasses before any work starts.

Every mistake is one QConvertError naming the recipe key: an unknown key (with the nearest valid
one), a value of the wrong type, a missing model or file, a bad file type or GPTQ/AWQ setting.
Relative paths are relative to the recipe file.

A recipe names one model (`[model]`) or several (`[[models]]`, a release matrix): each entry of
`[[models]]` has the keys of `[model]` and may override the top-level calibration, gguf, gptq,
awq and run tables for itself (a table merges key by key; `gptq = []`, `gguf = false` or
`awq = false` drops that format for the model). Evaluation is the same for every model, so that
the report compares like with like.
"""

import dataclasses
import difflib
import sys
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from qconvert.errors import QConvertError, quoted

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_EVAL_TEXT = REPO_ROOT / "calibration" / "eval" / "heldout-en.txt"
PATH_CHARS = 200  # a path in an error line is what the user must find: quoted longer than other values


@dataclass(frozen=True)
class ModelSection:
    path: Path  # a Hugging Face model folder (config.json and safetensors)
    name: str = ""  # how artefacts are named; default: the folder's name
    variant: str = ""  # [[models]] only: tells apart entries of one model (same name), e.g. two GPTQ settings


@dataclass(frozen=True)
class CalibrationSection:
    file: Path | None = None  # a calibration file from `qconvert calib`; or build one from:
    sources: list[Path] = field(default_factory=list)  # text/JSONL/chat/dataset sources; none: the bundled set
    n_samples: int = 128
    seqlen: int = 512
    mode: str = "concat"
    min_tokens: int = 0
    seed: int = 0


@dataclass(frozen=True)
class GGUFSection:
    types: list[str] = field(default_factory=lambda: ["q4_k_m"])
    imatrix: bool | str = False  # true, false, or "both" (each type with and without)
    gptq: bool = False  # each type also rounded with GPTQ inside its blocks (`qconvert gguf --gptq`)
    ollama: bool = False  # an Ollama Modelfile beside each GGUF


@dataclass(frozen=True)
class GPTQSection:
    bits: int = 4
    group_size: int = 128
    sym: bool = True
    desc_act: bool = False
    static_groups: bool = False
    damp: float = 0.01


@dataclass(frozen=True)
class AWQSection:
    packed: bool = True  # a GEMM checkpoint for transformers and vLLM
    bits: int = 4
    group_size: int = 128
    zero_point: bool = True
    gguf_types: list[str] = field(default_factory=list)  # AWQ-scaled fp16 exports, one per GGUF type made from them


@dataclass(frozen=True)
class EvalSection:
    text: Path = DEFAULT_EVAL_TEXT
    ctx: int = 512
    chunks: int = 0  # 0: every whole chunk of the text


@dataclass(frozen=True)
class RunSection:
    device: str = "cpu"
    compute_dtype: str = "auto"
    threads: int = 0  # 0: all cores


@dataclass(frozen=True)
class Recipe:
    path: Path
    model: ModelSection
    calibration: CalibrationSection = CalibrationSection()
    gguf: GGUFSection | None = None
    gptq: list[GPTQSection] = field(default_factory=list)
    awq: AWQSection | None = None
    eval: EvalSection = EvalSection()
    run: RunSection = RunSection()

    @property
    def name(self) -> str:
        return self.model.name or self.model.path.name

    @property
    def label(self) -> str:
        """The model's prefix of stage names in a release matrix: NAME, or NAME+VARIANT."""
        return self.name + (f"+{self.model.variant}" if self.model.variant else "")

    @property
    def needs_calibration(self) -> bool:
        imatrix = self.gguf is not None and (self.gguf.imatrix is not False or self.gguf.gptq)
        return imatrix or bool(self.gptq) or self.awq is not None


@dataclass(frozen=True)
class Release:
    """A whole recipe file: its models, each resolved into a Recipe of its own."""

    path: Path
    recipes: list[Recipe]
    matrix: bool = False  # [[models]]: stage and artefact names carry each model's label

    @property
    def name(self) -> str:
        return self.recipes[0].name if not self.matrix else ", ".join(r.label for r in self.recipes)


OVERRIDABLE = ("calibration", "gguf", "gptq", "awq", "run")  # what a [[models]] entry may set for itself
SECTIONS = {"model": ModelSection, "calibration": CalibrationSection, "gguf": GGUFSection, "gptq": GPTQSection, "awq": AWQSection, "eval": EvalSection, "run": RunSection}


def _type_name(tp: object) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", Path: "a path (string)"}
    if typing.get_origin(tp) is list:
        return f"a list of {_type_name(typing.get_args(tp)[0]).removeprefix('a ').removeprefix('an ')}s"
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return " or ".join(_type_name(a) for a in args) if args else names.get(tp, str(tp))


def _convert(value: object, tp: object, where: str, base: Path) -> object:
    """`value` as type `tp` (int, float, bool, str, Path, list[...], or a union of those)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where, base)
            except QConvertError:
                pass
    elif origin is list:
        if isinstance(value, list):
            return [_convert(v, typing.get_args(tp)[0], f"{where}[{i}]", base) for i, v in enumerate(value)]
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Path:
        if isinstance(value, str) and value:
            if "\0" in value:
                raise QConvertError(f"the path {quoted(value, PATH_CHARS)} holds a NUL character", where)
            try:
                return (base / Path(value).expanduser()).absolute()
            except RuntimeError as exc:  # "~user" of no such user, or no home directory
                raise QConvertError(f"cannot expand {quoted(value, PATH_CHARS)}: {exc}", where) from None
    got = type(value).__name__.replace("dict", "table").replace("str", "string").replace("list", "array")
    raise QConvertError(f"must be {_type_name(tp)}, not {got} {quoted(value)}", where)


def _exists(path: Path, where: str, is_file: bool = False) -> bool:
    """Whether `path` exists (is a file); a path the system refuses to look up (too long) is an error."""
    try:
        return path.is_file() if is_file else path.exists()
    except OSError as exc:
        raise QConvertError(f"cannot look up {quoted(path, PATH_CHARS)}: {exc.strerror or exc}", where) from None


def _unknown_key(key: str, valid: list[str], where: str) -> QConvertError:
    near = [v for v in valid if key.startswith(v) or v.startswith(key)] or difflib.get_close_matches(key, valid, n=1)
    hint = f"did you mean {near[0]!r}?" if near else f"valid keys: {', '.join(valid)}"
    return QConvertError(f"unknown key {quoted(key)}", where, hint)


def _section(cls: type, table: object, where: str, base: Path, defaults: object = None) -> object:
    """The table as a `cls`; with `defaults` (an instance), the table overrides its values key by key."""
    if not isinstance(table, dict):
        raise QConvertError(f"must be a table ([{where.split(': ', 1)[-1]}]), not {type(table).__name__}", where)
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in fields(cls)]
    values = {}
    for key, value in table.items():
        if key not in valid:
            raise _unknown_key(key, valid, where)
        values[key] = _convert(value, hints[key], f"{where}.{key}", base)
    if defaults is not None:
        return dataclasses.replace(defaults, **values)
    for f in fields(cls):
        if f.name not in values and f.default is MISSING and f.default_factory is MISSING:
            raise QConvertError(f"missing key {f.name!r}", where)
    return cls(**values)


def _gptq_sections(table: object, where: str, base: Path) -> list[GPTQSection]:
    tables = table if isinstance(table, list) else [table]  # [gptq] once, or [[gptq]] per setting
    return [_section(GPTQSection, t, f"{where}[{i}]", base) for i, t in enumerate(tables)]


def _check(recipe: Recipe, where: str, prefix: str = "") -> None:
    """What the types alone don't catch: files that must exist, and values the stages would refuse.
    `prefix` ("models[1].") names a [[models]] entry in the errors."""
    from qconvert.quant.file_types import parse_file_type

    model = recipe.model.path
    if not _exists(model / "config.json", f"{where}: {prefix or 'model.'}path", is_file=True):
        raise QConvertError(f"no Hugging Face model folder (with config.json) at {quoted(model, PATH_CHARS)}", f"{where}: {prefix or 'model.'}path", "give the folder of a safetensors checkpoint")
    at = f"{where}: {prefix}"  # the start of every key in the errors below
    calibration = recipe.calibration
    for key, path in [("calibration.file", calibration.file), *((f"calibration.sources[{i}]", p) for i, p in enumerate(calibration.sources)), ("eval.text", recipe.eval.text)]:
        if path is not None and not _exists(path, f"{at}{key}"):
            raise QConvertError(f"no such file or folder: {quoted(path, PATH_CHARS)}", f"{at}{key}")
    if calibration.file is not None and calibration.sources:
        raise QConvertError("give either a calibration file or sources, not both", f"{at}calibration")
    if calibration.mode not in ("concat", "samples"):
        raise QConvertError(f"unknown mode {quoted(calibration.mode)}", f"{at}calibration.mode", "choose concat or samples")
    for key in ("n_samples", "seqlen"):
        if getattr(calibration, key) < 1:
            raise QConvertError("must be at least 1", f"{at}calibration.{key}")
    if recipe.gguf is not None:
        if recipe.gguf.imatrix not in (True, False, "both"):
            raise QConvertError(f"must be true, false or \"both\", not {quoted(recipe.gguf.imatrix)}", f"{at}gguf.imatrix")
        if not recipe.gguf.types:
            raise QConvertError("lists no types", f"{at}gguf.types", "name at least one, e.g. [\"q4_k_m\"]")
    gguf_types = [(f"gguf.types[{i}]", t) for i, t in enumerate(recipe.gguf.types if recipe.gguf else [])]
    gguf_types += [(f"awq.gguf_types[{i}]", t) for i, t in enumerate(recipe.awq.gguf_types if recipe.awq else [])]
    seen: dict[str, str] = {}
    for key, text in gguf_types:
        parse_file_type(text, f"{at}{key}")
        same = seen.setdefault(f"{key.split('[')[0]}:{text.lower()}", key)
        if same != key:
            raise QConvertError(f"repeats {same}", f"{at}{key}", "name each type once")
    settings = [(s.bits, s.group_size, s.sym, s.desc_act, s.static_groups, s.damp) for s in recipe.gptq]
    for i, setting in enumerate(settings):
        if settings.index(setting) != i:
            raise QConvertError(f"repeats gptq[{settings.index(setting)}]", f"{at}gptq[{i}]", "give each setting once")
    for i, section in enumerate(recipe.gptq):
        _check_config(lambda s=section: _gptq_config(s), f"{at}gptq[{i}]")
    if recipe.awq is not None:
        if recipe.awq.packed:
            _check_config(lambda: _awq_config(recipe.awq), f"{at}awq")
        elif not recipe.awq.gguf_types:
            raise QConvertError("asks for nothing: packed = false and no gguf_types", f"{at}awq")
    if recipe.run.device not in ("cpu", "cuda"):
        raise QConvertError(f"unknown device {quoted(recipe.run.device)}", f"{at}run.device", "choose cpu or cuda")
    if recipe.eval.ctx < 8 or recipe.eval.ctx % 2 or recipe.eval.chunks < 0 or recipe.run.threads < 0:
        bad = "eval.ctx" if recipe.eval.ctx < 8 or recipe.eval.ctx % 2 else "eval.chunks" if recipe.eval.chunks < 0 else "run.threads"
        raise QConvertError("out of range (ctx: an even number of at least 8; chunks and threads: 0 or more)", f"{at}{bad}")


def _gptq_config(section: GPTQSection):
    from qconvert.gptq.config import GPTQConfig

    return GPTQConfig(bits=section.bits, group_size=section.group_size, sym=section.sym, desc_act=section.desc_act, static_groups=section.static_groups, damp_percent=section.damp)


def _awq_config(section: AWQSection):
    from qconvert.awq.config import AWQConfig

    return AWQConfig(bits=section.bits, group_size=section.group_size, zero_point=section.zero_point)


def _check_config(make, where: str) -> None:
    """Build a stage's config so its own checks run now; their error names the recipe key."""
    try:
        make()
    except QConvertError as exc:
        key = str(exc.where).lstrip("-").replace("-", "_") if exc.where else ""
        raise QConvertError(exc.what, f"{where}.{key}" if key else where, exc.hint) from None


def _model_entries(raw: object, top: dict[str, object], where: str, base: Path) -> list[Recipe]:
    """[[models]]: each entry a ModelSection's keys plus its own overrides of the top-level tables."""
    if not isinstance(raw, list) or not raw or not all(isinstance(m, dict) for m in raw):
        raise QConvertError("must be a non-empty array of tables ([[models]] with path = ...)", f"{where}: models")
    valid = [f.name for f in fields(ModelSection)] + list(OVERRIDABLE)
    recipes, labels = [], {}
    for i, entry in enumerate(raw):
        at = f"{where}: models[{i}]"
        for key in entry:
            if key == "eval":
                raise QConvertError("evaluation is the same for every model", f"{at}.eval", "set [eval] at the top level")
            if key not in valid:
                raise _unknown_key(key, valid, at)
        model = _section(ModelSection, {k: v for k, v in entry.items() if k not in OVERRIDABLE}, at, base)
        sections = dict(top)
        for key in OVERRIDABLE:
            if key not in entry:
                continue
            value = entry[key]
            if key == "gptq":
                sections[key] = _gptq_sections(value, f"{at}.gptq", base) if value != [] else []
            elif value is False and key in ("gguf", "awq"):
                sections[key] = None
            else:
                sections[key] = _section(SECTIONS[key], value, f"{at}.{key}", base, defaults=top.get(key) or None)
        recipe = Recipe(path=Path(where).absolute(), model=model, **sections)
        _check_names(recipe, at)
        if recipe.label in labels:
            raise QConvertError(f"repeats models[{labels[recipe.label]}] ({recipe.label!r})", at, "give it another name, or a variant = \"...\"")
        labels[recipe.label] = i
        _check(recipe, where, f"models[{i}].")
        recipes.append(recipe)
    return recipes


def _check_names(recipe: Recipe, at: str) -> None:
    """The model's name and variant name files and folders of the run: no '/', no leading '.'."""
    for key, text in (("name", recipe.name), ("variant", recipe.model.variant)):
        if "/" in text or text.startswith(".") or "\0" in text:
            raise QConvertError(f"{quoted(text)} cannot name a folder (no '/', no leading '.')", f"{at}.{key}")


def load_recipe(path: Path) -> Release:
    path = Path(path)
    where = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise QConvertError("no such recipe file", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise QConvertError(f"cannot read the recipe: {exc}", path) from None
    except tomllib.TOMLDecodeError as exc:
        raise QConvertError(f"not valid TOML: {exc}", path) from None
    base = path.absolute().parent
    for key in raw:
        if key not in SECTIONS and key != "models":
            raise _unknown_key(key, [*SECTIONS, "models"], where)
    if "model" not in raw and "models" not in raw:
        raise QConvertError("missing the [model] table", where, 'add [model] with path = "MODEL_DIR", or a [[models]] table per model')
    if "model" in raw and "models" in raw:
        raise QConvertError("has both [model] and [[models]]", where, "name one model in [model], or every model in [[models]]")
    sections = {}
    for key, table in raw.items():
        if key == "gptq":
            sections[key] = _gptq_sections(table, f"{where}: gptq", base)
        elif key != "models":
            sections[key] = _section(SECTIONS[key], table, f"{where}: {key}", base)
    if "models" in raw:
        return Release(path.absolute(), _model_entries(raw["models"], sections, where, base), matrix=True)
    if sections["model"].variant:
        raise QConvertError("a variant only tells apart entries of [[models]]", f"{where}: model.variant")
    recipe = Recipe(path=path.absolute(), **sections)
    _check_names(recipe, f"{where}: model")
    _check(recipe, where)
    return Release(path.absolute(), [recipe])
