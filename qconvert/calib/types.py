"""The calibration data types and their parsing: what a set is built from and how (source specs,
sampling options and their choices), and the manifest a calibration file carries.

Light on purpose (no torch, transformers or datasets): the CLI imports it when commands are defined.

The manifest says what a set was built from, with what, and what came out. It is stored as one JSON
object under the safetensors metadata key `qconvert.calibration`, with
`"format": "qconvert-calibration"` and `"version": 1`; readers check both before anything else.
"""

import json
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from qconvert import __version__
from qconvert.errors import QConvertError


class SourceFormat(str, Enum):
    AUTO = "auto"  # by suffix, and for .jsonl by the first record (see readers.detect_format)
    TEXT = "text"  # a .txt/.md file, or a folder of them: one document per file
    JSONL = "jsonl"  # JSON lines, one document per record, its text in a field (default "text")
    CHAT = "chat"  # JSON lines of {"messages": [{"role", "content"}, ...]}, formatted with the chat template
    PARQUET = "parquet"  # the formats below are read by the `datasets` library, from local paths only
    JSON = "json"  # a JSON file (an array of records, or JSON lines) as `datasets` reads it
    ARROW = "arrow"  # an Arrow IPC file (file or stream format)
    DATASET = "dataset"  # a folder: `save_to_disk` output, or a `datasets` cache folder of .arrow files


class ContentKind(str, Enum):
    TEXT = "text"
    CHAT = "chat"


class SampleMode(str, Enum):
    CONCAT = "concat"  # join documents, cut fixed seqlen windows (AutoAWQ style)
    SAMPLES = "samples"  # one document per sample, truncated to seqlen or right-padded (GPTQ style)


# The record field a source's documents are in, when the user names none.
DEFAULT_FIELD = {ContentKind.TEXT: "text", ContentKind.CHAT: "messages"}


@dataclass(frozen=True)
class SourceSpec:
    path: Path
    format: SourceFormat = SourceFormat.AUTO
    field: str | None = None  # record field (JSONL) or column (datasets) holding the text or the messages
    split: str | None = None  # split of a dataset folder holding several ("train" if present)
    label: str | None = None  # how the manifest names it (the bundled set uses "calibration/en", ...)

    @property
    def name(self) -> str:
        return self.label or str(self.path)


@dataclass(frozen=True)
class SamplingOptions:
    n_samples: int = 128
    seqlen: int = 512
    mode: SampleMode = SampleMode.CONCAT
    min_tokens: int = 0  # documents with fewer tokens are dropped (both modes)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_samples", "seqlen"):
            if getattr(self, name) < 1:
                raise QConvertError(f"{name.replace('_', '-')} must be at least 1", f"--{name.replace('_', '-')}")
        if self.min_tokens < 0:
            raise QConvertError("min-tokens must not be negative", "--min-tokens")
        if self.seed < 0:
            raise QConvertError("seed must not be negative", "--seed")


@dataclass(frozen=True)
class CalibRequest:
    """A calibration set to build: no sources means the bundled default set."""

    sources: tuple[SourceSpec, ...] = ()
    options: SamplingOptions = SamplingOptions()


@dataclass(frozen=True)
class CalibInput:
    """What a quantization stage calibrates on: a calibration file, or a set to build."""

    file: Path | None = None
    request: CalibRequest = CalibRequest()


def _parse(enum: type[Enum], text: str, where: str) -> Enum:
    try:
        return enum(text.lower())
    except ValueError:
        raise QConvertError(f"unknown {where.lstrip('-')} {text!r}", where, f"choose one of: {', '.join(e.value for e in enum)}") from None


def parse_format(text: str) -> SourceFormat:
    return _parse(SourceFormat, text, "--format")


def parse_mode(text: str) -> SampleMode:
    return _parse(SampleMode, text, "--mode")


# The manifest

MANIFEST_KEY = "qconvert.calibration"
MANIFEST_FORMAT = "qconvert-calibration"
MANIFEST_VERSION = 1
REBUILD_HINT = "rebuild it with `qconvert calib MODEL_DIR -o FILE`"


@dataclass(frozen=True)
class TokenizerInfo:
    sha256: str  # see store.tokenizer_sha256
    class_name: str
    vocab_size: int  # ids in use, added tokens included
    pad_token_id: int  # what samples mode pads with
    name_or_path: str  # where it was loaded from, for `inspect` to decode samples


@dataclass(frozen=True)
class SourceRecord:
    path: str  # as given (the bundled set: calibration/en, ...)
    format: str  # as detected
    kind: str  # text or chat
    sha256: str  # the file's bytes; a folder: its files' "path<TAB>sha256" lines
    bytes: int
    documents: int


@dataclass(frozen=True)
class Counts:
    documents: int  # in all sources
    documents_used: int  # tokenized into the pool, after the drops below
    empty_dropped: int  # blank texts
    duplicate_documents: int  # identical to one already taken
    short_dropped: int  # fewer tokens than --min-tokens
    pool_tokens: int  # tokens of the documents used
    truncated: int  # samples mode: documents cut to seqlen
    padded: int  # samples mode: samples right-padded
    duplicate_samples: int  # identical samples passed over
    samples_requested: int
    samples: int
    tokens: int  # real tokens (attention mask 1) in the set


@dataclass(frozen=True)
class Manifest:
    tokenizer: TokenizerInfo
    options: SamplingOptions
    sources: tuple[SourceRecord, ...]
    counts: Counts
    qconvert_version: str = __version__
    format: str = MANIFEST_FORMAT
    version: int = MANIFEST_VERSION

    def to_json(self) -> str:
        data = asdict(self)
        data["options"]["mode"] = self.options.mode.value
        head = {"format": data.pop("format"), "version": data.pop("version")}
        return json.dumps({**head, **data}, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, where: object) -> "Manifest":
        try:
            data: dict[str, Any] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise QConvertError(f"unreadable calibration manifest: {exc.msg}", where, REBUILD_HINT) from None
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            raise QConvertError("not a qconvert calibration file (its manifest has another format)", where, REBUILD_HINT)
        if data.get("version") != MANIFEST_VERSION:
            raise QConvertError(
                f"calibration file version {data.get('version')!r}, this qconvert ({__version__}) reads version {MANIFEST_VERSION}",
                where,
                f"{REBUILD_HINT}, or use the qconvert that made it ({data.get('qconvert_version', '?')})",
            )
        try:
            options = dict(data["options"])
            options["mode"] = SampleMode(options["mode"])
            return cls(
                tokenizer=TokenizerInfo(**data["tokenizer"]),
                options=SamplingOptions(**options),
                sources=tuple(SourceRecord(**s) for s in data["sources"]),
                counts=Counts(**data["counts"]),
                qconvert_version=data["qconvert_version"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise QConvertError(f"incomplete calibration manifest ({type(exc).__name__}: {exc})", where, REBUILD_HINT) from None
