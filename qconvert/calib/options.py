"""What a calibration set is built from and how: source specs, sampling options and their choices.

Light on purpose (no torch, transformers or datasets): the CLI imports it when commands are defined.
"""

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from qconvert.errors import QConvertError


class SourceFormat(str, Enum):
    AUTO = "auto"  # by suffix, and for .jsonl by the first record (see sources.detect_format)
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
