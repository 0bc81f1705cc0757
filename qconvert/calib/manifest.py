"""The manifest a calibration file carries: what it was built from, with what, and what came out.

Stored as one JSON object under the safetensors metadata key `qconvert.calibration`, with
`"format": "qconvert-calibration"` and `"version": 1`; readers check both before anything else.
"""

import json
from dataclasses import asdict, dataclass
from typing import Any

from qconvert import __version__
from qconvert.calib.options import SampleMode, SamplingOptions
from qconvert.errors import QConvertError

MANIFEST_KEY = "qconvert.calibration"
MANIFEST_FORMAT = "qconvert-calibration"
MANIFEST_VERSION = 1
REBUILD_HINT = "rebuild it with `qconvert calib MODEL_DIR -o FILE`"


@dataclass(frozen=True)
class TokenizerInfo:
    sha256: str  # see tokenize.tokenizer_sha256
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
