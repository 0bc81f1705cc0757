"""Reading calibration sources from local files into documents: text files and folders, JSONL text
and JSONL chat. Parquet, JSON, Arrow and dataset folders are read through `datasets` (datasets.py,
which builds on the types here); `build.read_source` picks the reader.

A document is one text (a file, a record's text field) or one conversation (a record's messages).
Every source also gets a content hash for the manifest: the sha256 of its bytes, or for a folder the
sha256 of its files' "relative/path<TAB>sha256" lines in path order.
"""

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qconvert.calib.types import DEFAULT_FIELD, ContentKind, SourceFormat, SourceSpec
from qconvert.errors import QConvertError

log = logging.getLogger(__name__)

Messages = list[dict[str, Any]]

TEXT_SUFFIXES = (".txt", ".md")
FORMAT_BY_SUFFIX = {
    ".txt": SourceFormat.TEXT,
    ".md": SourceFormat.TEXT,
    ".jsonl": SourceFormat.JSONL,  # or CHAT, by the first record
    ".json": SourceFormat.JSON,
    ".parquet": SourceFormat.PARQUET,
    ".arrow": SourceFormat.ARROW,
}
DATASETS_FORMATS = (SourceFormat.PARQUET, SourceFormat.JSON, SourceFormat.ARROW, SourceFormat.DATASET)
# A folder holding one of these is a `datasets` folder, not a folder of text files.
DATASET_FOLDER_MARKERS = ("dataset_dict.json", "state.json", "dataset_info.json")
FORMAT_HINT = f"give --format {'|'.join(f.value for f in SourceFormat if f is not SourceFormat.AUTO)}"


@dataclass(frozen=True)
class Document:
    value: str | Messages  # the text, or a conversation's messages
    where: str  # for errors: "file", "file:line" or "folder row N"


@dataclass
class Source:
    spec: SourceSpec
    format: SourceFormat  # as detected, never AUTO
    kind: ContentKind
    sha256: str
    n_bytes: int
    documents: Sequence[Document]  # a list, or a lazy view of a dataset's rows; empty texts are dropped later


def check_messages(value: Any, where: str) -> Messages:
    """A record's `messages`: a non-empty list of {"role": str, "content": str, ...} objects."""
    if not isinstance(value, list) or not value:
        raise QConvertError("chat record's messages must be a non-empty list of {role, content} objects", where)
    for i, message in enumerate(value, 1):
        if not isinstance(message, dict):
            raise QConvertError(f"chat message {i} is not an object", where, 'each message is {"role": ..., "content": ...}')
        for key in ("role", "content"):
            if key not in message or message[key] is None:
                raise QConvertError(f"chat message {i} has no {key!r}", where, 'each message is {"role": ..., "content": ...}')
            if not isinstance(message[key], str):
                raise QConvertError(f"chat message {i} has a {key!r} that is not a string", where)
    return value


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def folder_hash(root: Path, files: list[Path], file_hashes: list[str]) -> str:
    lines = "".join(f"{p.relative_to(root).as_posix()}\t{h}\n" for p, h in zip(files, file_hashes))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def decode_text(raw: bytes, path: Path) -> str:
    """UTF-8 text (a leading BOM dropped); a binary or undecodable file is refused."""
    nul = raw.find(b"\0")
    if nul >= 0:
        raise QConvertError(f"binary file, not text (a NUL byte at offset {nul})", path, "give UTF-8 text, or the right --format")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise QConvertError(f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})", path, "convert it to UTF-8") from None
    return text.removeprefix("\ufeff")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise QConvertError(f"cannot read it: {exc.strerror or exc}", path) from exc


def _text_files(folder: Path) -> list[Path]:
    files = [
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    if not files:
        raise QConvertError(f"no {' or '.join(TEXT_SUFFIXES)} files in this folder", folder, FORMAT_HINT)
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def read_text_source(spec: SourceSpec) -> Source:
    path = spec.path
    files = _text_files(path) if path.is_dir() else [path]
    documents, hashes, n_bytes = [], [], 0
    for file in files:
        raw = _read_bytes(file)
        text = decode_text(raw, file)
        if not text.strip():
            raise QConvertError("empty file", file, "remove it or give text")
        documents.append(Document(text, str(file)))
        hashes.append(hashlib.sha256(raw).hexdigest())
        n_bytes += len(raw)
    sha = folder_hash(path, files, hashes) if path.is_dir() else hashes[0]
    log.info("%s: %d text file(s), %d bytes", spec.name, len(files), n_bytes)
    return Source(spec, SourceFormat.TEXT, ContentKind.TEXT, sha, n_bytes, documents)


def _json_lines(text: str, path: Path) -> list[tuple[int, dict[str, Any]]]:
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise QConvertError(f"malformed JSON line: {exc.msg} (column {exc.colno})", f"{path}:{lineno}", "each line must be one JSON object") from None
        if not isinstance(record, dict):
            raise QConvertError(f"a JSON line must be an object, this is a {type(record).__name__}", f"{path}:{lineno}")
        records.append((lineno, record))
    if not records:
        raise QConvertError("no JSON records in this file", path)
    return records


def jsonl_kind(first: dict[str, Any], field: str | None) -> ContentKind:
    """A JSONL file under --format auto: chat if its first record's field holds a list of messages."""
    if field is not None:
        return ContentKind.CHAT if isinstance(first.get(field), list) else ContentKind.TEXT
    if DEFAULT_FIELD[ContentKind.TEXT] not in first and isinstance(first.get(DEFAULT_FIELD[ContentKind.CHAT]), list):
        return ContentKind.CHAT
    return ContentKind.TEXT


def record_document(record: dict[str, Any], field: str, kind: ContentKind, where: str) -> Document:
    if field not in record:
        raise QConvertError(f"record has no {field!r} field (it has: {', '.join(map(str, record)) or 'none'})", where, "name the field with --field")
    value = record[field]
    if kind is ContentKind.CHAT:
        return Document(check_messages(value, where), where)
    if not isinstance(value, str):
        hint = "for chat messages use --format chat" if isinstance(value, list) else None
        raise QConvertError(f"field {field!r} is a {type(value).__name__}, not text", where, hint)
    return Document(value, where)


def read_jsonl_source(spec: SourceSpec, fmt: SourceFormat) -> Source:
    raw = _read_bytes(spec.path)
    text = decode_text(raw, spec.path)
    if not text.strip():
        raise QConvertError("empty file", spec.path, "give JSON lines")
    records = _json_lines(text, spec.path)
    if fmt is SourceFormat.CHAT:
        kind = ContentKind.CHAT
    elif fmt is SourceFormat.JSONL:
        kind = ContentKind.TEXT
    else:
        kind = jsonl_kind(records[0][1], spec.field)
    field = spec.field or DEFAULT_FIELD[kind]
    documents = [record_document(record, field, kind, f"{spec.path}:{lineno}") for lineno, record in records]
    log.info("%s: %d %s records", spec.name, len(documents), kind.value)
    fmt = SourceFormat.CHAT if kind is ContentKind.CHAT else SourceFormat.JSONL
    return Source(spec, fmt, kind, hashlib.sha256(raw).hexdigest(), len(raw), documents)


def detect_format(path: Path) -> SourceFormat:
    """--format auto: a folder is a dataset folder or a folder of text files; a file goes by its suffix."""
    if path.is_dir():
        return SourceFormat.DATASET if any((path / m).is_file() for m in DATASET_FOLDER_MARKERS) else SourceFormat.TEXT
    suffix = path.suffix.lower()
    if suffix not in FORMAT_BY_SUFFIX:
        raise QConvertError(f"cannot tell the format from the suffix {suffix or '(none)'!r}", path, FORMAT_HINT)
    return FORMAT_BY_SUFFIX[suffix]


def source_format(spec: SourceSpec) -> SourceFormat:
    """The format `spec` is read as (never AUTO), once its path is known to be there and of a kind
    that format takes."""
    path = spec.path
    if not path.exists():
        raise QConvertError("no such file or folder", path)
    fmt = detect_format(path) if spec.format is SourceFormat.AUTO else spec.format
    if path.is_dir() and fmt not in (SourceFormat.TEXT, SourceFormat.DATASET):
        raise QConvertError(f"a folder cannot be read as {fmt.value}", path, "give --format text or dataset, or a file")
    if fmt is SourceFormat.DATASET and not path.is_dir():
        raise QConvertError("--format dataset takes a folder (save_to_disk output or a datasets cache folder)", path)
    return fmt
