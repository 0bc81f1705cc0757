"""Read and write llama.cpp importance-matrix (imatrix) files, in both formats llama-imatrix writes.

GGUF (its default): `general.type = "imatrix"`, the keys `imatrix.datasets` (array of strings),
`imatrix.chunk_count` and `imatrix.chunk_size` (uint32), and for each weight W two F32 tensors:
`W.in_sum2`, ne (n_in, n_mat): per input column, the sum over the counted tokens of the squared
activation; and `W.counts`, ne (1, n_mat): the tokens counted per matrix (n_mat > 1 for MoE experts).
Dimensions of 1 at the end of ne are dropped, so a dense weight has 1-D tensors.

Legacy .dat (`--output-format dat`), little-endian: int32 n_entries; per entry int32 name length,
the name, int32 ncall (the chunks seen), int32 nval and nval float32 values (in_sum2 / count * ncall);
then, optionally, int32 chunk count, int32 length and the dataset name. Per-matrix counts are lost:
an entry reads as one matrix of nval columns counted ncall times, so importance() is the same.

The formats are told apart by content (the GGUF magic), never by the file name.
"""

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qconvert.errors import QConvertError
from qconvert.ggml_types import GGMLQuantizationType, GGUFValueType
from qconvert.gguf_read import DEFAULT_ALIGNMENT, TensorInfo, read_gguf_header
from qconvert.outputs import atomic_output

SUM_SUFFIX = ".in_sum2"
COUNT_SUFFIX = ".counts"
KEY_DATASETS = "imatrix.datasets"
KEY_CHUNK_COUNT = "imatrix.chunk_count"
KEY_CHUNK_SIZE = "imatrix.chunk_size"
_MAX_NAME = 63  # GGML_MAX_NAME less its NUL: llama.cpp can't hold a longer tensor name
_MAX_LEGACY_ENTRIES = 1 << 20  # far above any model; a larger count means the file is no .dat


@dataclass
class ImatrixEntry:
    in_sum2: np.ndarray  # float32 (n_mat, n_in): per input column, sum over counted tokens of the squared activation
    counts: np.ndarray  # float32 (n_mat,): tokens counted per matrix

    def __post_init__(self):
        self.in_sum2 = np.asarray(self.in_sum2, dtype=np.float32)
        self.counts = np.asarray(self.counts, dtype=np.float32)
        if self.in_sum2.ndim != 2 or self.in_sum2.size == 0 or self.counts.shape != self.in_sum2.shape[:1]:
            raise ValueError(f"in_sum2 {self.in_sum2.shape} and counts {self.counts.shape} are not (n_mat, n_in) and (n_mat,)")


@dataclass
class ImportanceMatrix:
    entries: dict[str, ImatrixEntry]  # by GGUF tensor name, e.g. "blk.0.attn_q.weight"
    datasets: list[str]  # what llama-imatrix records as the dataset(s): its -f text file(s), as given
    chunk_count: int
    chunk_size: int  # tokens per chunk; 0 when read from a legacy .dat, which does not record it

    def importance(self, name: str) -> np.ndarray | None:
        """The float32 per-column weights llama-quantize hands its quantizer for tensor `name`
        (flattened over n_mat), or None when the matrix lacks it."""
        entry = self.entries.get(name)
        if entry is None:
            return None
        # load_imatrix (quantize.cpp) takes each count through std::lround into an int64: halves
        # round away from zero, and on x86-64 NaN, Inf and out-of-range counts come out negative.
        counts = entry.counts.astype(np.float64)
        in_range = np.isfinite(counts) & (np.abs(counts) < 2.0**63)
        rounded = np.where(in_range, np.sign(counts) * np.floor(np.abs(counts) + 0.5), -1).astype(np.float32)[:, None]
        # Then sum / count in float32, and 1 for every column of a matrix that counted no tokens.
        with np.errstate(divide="ignore", invalid="ignore"):
            per_column = entry.in_sum2 / rounded
        return np.where(rounded > 0, per_column, np.float32(1)).astype(np.float32).ravel()


def read_imatrix(path: Path) -> ImportanceMatrix:
    """Read an imatrix file llama-imatrix wrote, GGUF or legacy .dat (told apart by content)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if f.read(4) == b"GGUF":
                matrix = _read_gguf(path)
            else:
                f.seek(0)
                matrix = _read_legacy(path, f)
    except OSError as exc:
        raise QConvertError(f"cannot read: {exc.strerror or exc}", path) from exc
    for name, entry in matrix.entries.items():  # the quantizers refuse a NaN or Inf weight: say where it came from
        bad = np.argwhere(~np.isfinite(entry.in_sum2))
        if len(bad):
            raise QConvertError(f"imatrix entry {name} has a non-finite sum ({entry.in_sum2[tuple(bad[0])]}) at column {bad[0][1]}", path, "the file is damaged; compute it again")
    return matrix


def write_imatrix(path: Path, matrix: ImportanceMatrix, force: bool = False) -> Path:
    """Write `matrix` as a GGUF imatrix, as llama-imatrix does (same keys, tensors in name order);
    the file appears whole or not at all, and an existing one is replaced only with `force`."""
    path = Path(path)
    if not matrix.entries:
        raise QConvertError("an imatrix needs at least one entry", path, "llama.cpp refuses an empty one")
    entries = {}
    for name in sorted(matrix.entries):  # llama-imatrix's order
        if len((name + SUM_SUFFIX).encode()) > _MAX_NAME:
            raise QConvertError(f"tensor name {name!r} is too long for an imatrix GGUF ({_MAX_NAME} bytes with {SUM_SUFFIX})", path)
        entry = matrix.entries[name]
        entries[name] = ImatrixEntry(entry.in_sum2, entry.counts)  # checked again: its fields may have been replaced
    with atomic_output(path, force) as tmp:
        writer = _imatrix_writer(tmp)
        try:
            writer.add_type("imatrix")
            writer.add_key_value(KEY_DATASETS, list(matrix.datasets), GGUFValueType.ARRAY, sub_type=GGUFValueType.STRING)
            writer.add_uint32(KEY_CHUNK_COUNT, matrix.chunk_count)
            writer.add_uint32(KEY_CHUNK_SIZE, matrix.chunk_size)
            for name, entry in entries.items():
                writer.add_tensor(name + SUM_SUFFIX, _ggml_shaped(entry.in_sum2))
                writer.add_tensor(name + COUNT_SUFFIX, _ggml_shaped(entry.counts[:, None]))
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
    return path


def _imatrix_writer(path: Path):
    """A GGUFWriter that writes no general.architecture (an imatrix has none) and allows an empty
    array: llama-quantize wants the imatrix.datasets key even when no dataset is named."""
    from gguf import GGUFWriter  # here, not above: quantize reads imatrix files and must not import gguf

    class ImatrixWriter(GGUFWriter):
        def add_architecture(self) -> None:
            pass

        def _pack_val(self, val, vtype, add_vtype, sub_type=None) -> bytes:
            if vtype == GGUFValueType.ARRAY and len(val) == 0:
                return (self._pack("I", vtype) if add_vtype else b"") + self._pack("I", sub_type) + self._pack("Q", 0)
            return super()._pack_val(val, vtype, add_vtype, sub_type)

    return ImatrixWriter(path, arch="")


def _ggml_shaped(array: np.ndarray) -> np.ndarray:
    """`array` without leading axes of 1: ggml_n_dims drops trailing ne of 1, so llama-imatrix
    stores a dense weight's (1, n_in) sums as 1-D."""
    shape = array.shape
    while len(shape) > 1 and shape[0] == 1:
        shape = shape[1:]
    return np.ascontiguousarray(array.reshape(shape), dtype=np.float32)


def _read_gguf(path: Path) -> ImportanceMatrix:
    size = path.stat().st_size
    if size < 24:  # read_gguf_header would call it no GGUF
        raise QConvertError("truncated imatrix GGUF: the file ends inside the header", path, "write or copy it again")
    header = read_gguf_header(path)
    kind = header.get("general.type")
    if kind is not None and kind != "imatrix":
        raise QConvertError(f"not an imatrix but a GGUF of general.type {kind!r}", path, "give the file llama-imatrix wrote")
    missing = [key for key in (KEY_DATASETS, KEY_CHUNK_COUNT, KEY_CHUNK_SIZE) if key not in header.kv]
    if missing:  # llama-quantize refuses such a file
        raise QConvertError(f"not an imatrix: GGUF without {', '.join(missing)}", path, "give the file llama-imatrix wrote")
    datasets = header.kv[KEY_DATASETS]
    if datasets.type != GGUFValueType.ARRAY or datasets.sub_type != GGUFValueType.STRING:
        raise QConvertError(f"bad imatrix GGUF: {KEY_DATASETS} is not an array of strings", path)
    for key in (KEY_CHUNK_COUNT, KEY_CHUNK_SIZE):
        if header.kv[key].type != GGUFValueType.UINT32:  # llama.cpp reads them as uint32 or aborts
            raise QConvertError(f"bad imatrix GGUF: {key} is {header.kv[key].type.name}, not UINT32", path)

    tensors = {t.name: t for t in header.tensors}
    names = sorted({t[: -len(s)] for t in tensors for s in (SUM_SUFFIX, COUNT_SUFFIX) if t.endswith(s)})
    if not names:
        raise QConvertError(f"not an imatrix: GGUF without *{SUM_SUFFIX} and *{COUNT_SUFFIX} tensors", path)
    # llama.cpp reads every tensor with its padding to the alignment, the last one's too, so
    # each must end by the file's last aligned offset
    alignment = header.get("general.alignment", DEFAULT_ALIGNMENT)
    data_end = size - size % alignment
    entries = {}
    with open(path, "rb") as f:
        for name in names:
            for suffix in (SUM_SUFFIX, COUNT_SUFFIX):
                if name + suffix not in tensors:
                    raise QConvertError(f"bad imatrix GGUF: {name} has no {suffix} tensor", path)
            sums, counts = (_read_f32(f, data_end, path, tensors[name + suffix]) for suffix in (SUM_SUFFIX, COUNT_SUFFIX))
            if sums.size == 0 or counts.size == 0 or sums.size % counts.size:
                raise QConvertError(
                    f"bad imatrix GGUF: inconsistent shapes for {name}: {sums.size} {SUM_SUFFIX} values "
                    f"do not split into {counts.size} matrices ({COUNT_SUFFIX})",
                    path,
                )
            entries[name] = ImatrixEntry(sums.reshape(counts.size, -1), counts)
    return ImportanceMatrix(entries, list(datasets.value), header.kv[KEY_CHUNK_COUNT].value, header.kv[KEY_CHUNK_SIZE].value)


def _read_f32(f, data_end: int, path: Path, info: TensorInfo) -> np.ndarray:
    name = info.name
    if info.type != GGMLQuantizationType.F32:
        raise QConvertError(f"bad imatrix GGUF: {name} is {info.type.name}, not F32", path)
    n = int(np.prod(info.shape, dtype=np.int64))
    if info.offset + 4 * n > data_end:
        raise QConvertError(f"truncated imatrix GGUF: the file ends inside the data of {name}", path, "write or copy it again")
    f.seek(info.offset)
    return np.frombuffer(f.read(4 * n), dtype="<f4").astype(np.float32)


def _read_legacy(path: Path, f) -> ImportanceMatrix:
    """Parse a legacy .dat. An implausible field means the file is no imatrix; running out of bytes
    where the fields say there are more, that it is truncated."""
    size, pos = os.fstat(f.fileno()).st_size, 0

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        if pos + n > size:
            raise QConvertError(f"truncated legacy .dat imatrix: the file ends inside {what}", path, "write or copy it again")
        pos += n
        return f.read(n)

    def int32(what: str) -> int:
        return struct.unpack("<i", take(4, what))[0]

    def not_imatrix(why: str) -> QConvertError:
        return QConvertError(f"not an imatrix: neither GGUF nor a legacy .dat ({why})", path, "give the file llama-imatrix wrote")

    if size < 4:
        raise not_imatrix(f"only {size} bytes")
    n_entries = int32("the entry count")
    if not 0 < n_entries <= _MAX_LEGACY_ENTRIES:
        raise not_imatrix(f"entry count {n_entries}")
    entries = {}
    for i in range(n_entries):
        where = f"entry {i + 1} of {n_entries}"
        name_len = int32(where)
        if not 0 < name_len <= _MAX_NAME:
            raise not_imatrix(f"{where}: name length {name_len}")
        try:
            name = take(name_len, where).decode("utf-8")
        except UnicodeDecodeError:
            raise not_imatrix(f"{where}: name is not UTF-8") from None
        if not name.isprintable() or name in entries:
            raise not_imatrix(f"{where}: bad or repeated name {name!r}")
        ncall, nval = int32(where), int32(where)
        if nval < 1:
            raise not_imatrix(f"{where}: {nval} values")
        values = np.frombuffer(take(4 * nval, where), dtype="<f4").astype(np.float32)
        # quantize uses values / ncall, or the values themselves when ncall <= 0: a count of 1 does that
        entries[name] = ImatrixEntry(values[None, :], np.array([ncall if ncall > 0 else 1], dtype=np.float32))

    chunk_count, datasets = 0, []
    if pos < size:  # the trailer: files from before it was added end here
        chunk_count = int32("the chunk count")
        dataset_len = int32("the dataset name")
        if chunk_count < 0 or dataset_len < 0:
            raise not_imatrix(f"chunk count {chunk_count}, dataset name length {dataset_len}")
        dataset = take(dataset_len, "the dataset name").split(b"\0")[0].decode("utf-8", errors="replace")
        datasets = [dataset] if dataset else []
        if pos < size:
            raise not_imatrix(f"{size - pos} bytes after the end of the data")
    return ImportanceMatrix(entries, datasets, chunk_count, chunk_size=0)
