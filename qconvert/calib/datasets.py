"""Parquet, JSON and Arrow files and dataset folders, read with the `datasets` library from local
paths only: offline mode is on while a source is read, so no download is ever tried.

Files are loaded through datasets' packaged builders into memory, with a throw-away cache folder,
so nothing is left in ~/.cache. A `save_to_disk` folder is opened with `load_from_disk`; a datasets
cache folder (…/datasets/<name>/<config>/<version>/<hash>/, holding dataset_info.json and
<builder>-<split>[-NNNNN-of-NNNNN].arrow) is opened file by file with `Dataset.from_file`. Both folder kinds are
memory-mapped, and rows are read only when a document is needed.
"""

import logging
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qconvert.calib.readers import Document, Source, check_messages, folder_hash, sha256_file
from qconvert.calib.types import DEFAULT_FIELD, ContentKind, SourceFormat, SourceSpec
from qconvert.errors import QConvertError

log = logging.getLogger(__name__)

BUILDER = {SourceFormat.PARQUET: "parquet", SourceFormat.JSON: "json", SourceFormat.ARROW: "arrow"}
DEFAULT_SPLIT = "train"
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


@contextmanager
def offline(datasets) -> Iterator[None]:
    """The Hugging Face Hub off for the call, and the process as it was afterwards.

    `datasets` and `huggingface_hub` read the variables only when first imported, into constants
    that they check at call time (datasets before any download, huggingface_hub's HTTP session
    before any request, which it refuses while offline): so the constants are what is switched,
    the variables too for anything that reads them meanwhile, and all are put back on the way out,
    so the caller's own setting (and transformers') is left alone."""
    from huggingface_hub import constants as hub_constants

    flags = [(datasets.config, "HF_HUB_OFFLINE"), (datasets.config, "HF_DATASETS_OFFLINE"), (hub_constants, "HF_HUB_OFFLINE")]
    saved_flags = [getattr(module, name) for module, name in flags]
    saved_env = {name: os.environ.get(name) for name in OFFLINE_VARIABLES}
    try:
        os.environ.update(dict.fromkeys(OFFLINE_VARIABLES, "1"))
        for module, name in flags:
            setattr(module, name, True)
        yield
    finally:
        for (module, name), value in zip(flags, saved_flags):
            setattr(module, name, value)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _quiet(datasets) -> Iterator[None]:
    """datasets' progress bars and log lines off while it loads (its failures become our one error
    line), as they were afterwards."""
    was_disabled = datasets.are_progress_bars_disabled()
    datasets_log = logging.getLogger("datasets")
    level = datasets_log.level
    datasets.disable_progress_bars()
    datasets_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        datasets_log.setLevel(level)
        if not was_disabled:
            datasets.enable_progress_bars()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0]


def _load_file(datasets, path: Path, fmt: SourceFormat):
    with tempfile.TemporaryDirectory(prefix="qconvert-datasets-") as cache, _quiet(datasets):
        try:
            return datasets.load_dataset(BUILDER[fmt], data_files=str(path), split="train", cache_dir=cache, keep_in_memory=True)
        except Exception as exc:  # datasets and pyarrow raise many types for an unreadable file
            raise QConvertError(f"datasets cannot read it as {fmt.value}: {_first_line(exc)}", path, "check the file, or give the right --format") from exc


def _pick_split(splits: Sequence[str], wanted: str | None, path: Path) -> str:
    if wanted is not None:
        if wanted not in splits:
            raise QConvertError(f"no split {wanted!r} here", path, f"splits: {', '.join(splits)}")
        return wanted
    if DEFAULT_SPLIT in splits:
        return DEFAULT_SPLIT
    if len(splits) == 1:
        return splits[0]
    raise QConvertError("this dataset has several splits", path, f"choose one with --split: {', '.join(splits)}")


_SHARD = re.compile(r"^.+-(?P<split>[^-]+)-\d{5}-of-\d{5}\.arrow$")  # <builder>-<split>-00000-of-00004.arrow
_WHOLE = re.compile(r"^.+-(?P<split>[^-]+)\.arrow$")  # <builder>-<split>.arrow


def arrow_split(name: str) -> str | None:
    """The split a datasets cache file holds, from its name."""
    m = _SHARD.match(name) or _WHOLE.match(name)
    return m["split"] if m else None


def _cache_arrow_files(folder: Path, split: str | None) -> list[Path]:
    """The .arrow files of one split in a datasets cache folder, in shard order."""
    by_split: dict[str, list[Path]] = {}
    for p in sorted(folder.glob("*.arrow")):
        if (name := arrow_split(p.name)) is not None:
            by_split.setdefault(name, []).append(p)
    if not by_split:
        raise QConvertError("no .arrow files in this datasets folder", folder, "give a save_to_disk folder or a datasets cache folder")
    return by_split[_pick_split(sorted(by_split), split, folder)]


def _load_folder(datasets, folder: Path, split: str | None):
    try:
        with _quiet(datasets):
            if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
                loaded = datasets.load_from_disk(str(folder))
                if isinstance(loaded, datasets.DatasetDict):
                    loaded = loaded[_pick_split(list(loaded), split, folder)]
                return loaded
            parts = [datasets.Dataset.from_file(str(p)) for p in _cache_arrow_files(folder, split)]
            return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    except QConvertError:
        raise
    except Exception as exc:
        raise QConvertError(f"datasets cannot open this folder: {_first_line(exc)}", folder) from exc


def _column_kind(datasets, dataset, field: str | None, path: Path) -> tuple[str, ContentKind]:
    columns = list(dataset.column_names)
    if field is None:
        for kind in (ContentKind.TEXT, ContentKind.CHAT):
            if DEFAULT_FIELD[kind] in columns:
                field = DEFAULT_FIELD[kind]
                break
        else:
            raise QConvertError(f"no 'text' or 'messages' column (columns: {', '.join(columns)})", path, "name the column with --field")
    if field not in columns:
        raise QConvertError(f"no column {field!r} (columns: {', '.join(columns)})", path, "name the column with --field")
    feature = dataset.features[field]
    if isinstance(feature, (list, datasets.List, datasets.LargeList)):
        return field, ContentKind.CHAT
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        return field, ContentKind.TEXT
    raise QConvertError(f"column {field!r} holds {feature}, neither text nor chat messages", path, "name another column with --field")


def _drop_nones(messages: Any) -> Any:
    # Arrow stores messages as structs: keys absent from one message come back as None.
    if isinstance(messages, list):
        return [{k: v for k, v in m.items() if v is not None} if isinstance(m, dict) else m for m in messages]
    return messages


class DatasetDocuments(Sequence):
    """A dataset's rows as documents, read (and checked) one at a time."""

    def __init__(self, dataset, field: str, kind: ContentKind, label: str):
        self._column = dataset.select_columns([field])
        self._field, self._kind, self._label = field, kind, label

    def __len__(self) -> int:
        return len(self._column)

    def __getitem__(self, i: int) -> Document:  # type: ignore[override]
        value = self._column[int(i)][self._field]
        where = f"{self._label} row {int(i)}"
        if self._kind is ContentKind.CHAT:
            return Document(check_messages(_drop_nones(value), where), where)
        return Document(value or "", where)


def read_datasets_source(spec: SourceSpec, fmt: SourceFormat) -> Source:
    import datasets  # nothing online at import; the loads below run offline

    with offline(datasets):
        return _read(datasets, spec, fmt)


def _read(datasets, spec: SourceSpec, fmt: SourceFormat) -> Source:
    path = spec.path
    if fmt is SourceFormat.DATASET:
        dataset = _load_folder(datasets, path, spec.split)
        files = sorted((p for p in path.rglob("*") if p.is_file() and not p.name.endswith(".lock")), key=lambda p: p.relative_to(path).as_posix())
        hashes = [sha256_file(p) for p in files]
        sha, n_bytes = folder_hash(path, files, hashes), sum(p.stat().st_size for p in files)
    else:
        if spec.split is not None:
            log.info("%s: a single file has one split; --split %s is not used", spec.name, spec.split)
        dataset = _load_file(datasets, path, fmt)
        sha, n_bytes = sha256_file(path), path.stat().st_size
    if len(dataset) == 0:
        raise QConvertError("no rows in this dataset", path)
    field, kind = _column_kind(datasets, dataset, spec.field, path)
    log.info("%s: %d rows, column %r (%s) via datasets", spec.name, len(dataset), field, kind.value)
    return Source(spec, fmt, kind, sha, n_bytes, DatasetDocuments(dataset, field, kind, str(path)))

