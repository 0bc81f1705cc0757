"""GGUF → GGUF: quantize an f32/f16/bf16 GGUF file to any llama.cpp file type, like llama-quantize.

Metadata is copied (file type and quantization version updated), each tensor's type is chosen
by the same rules as llama-quantize, and data is read in row slabs straight from the file, so
memory stays bounded by a slab.
"""

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter

from qconvert.errors import QConvertError
from qconvert.gguf_read import GGUFHeader, read_gguf_header
from qconvert.gguf_stream import TensorSource, write_gguf
from qconvert.imatrix.file import ImportanceMatrix, read_imatrix
from qconvert.numeric import bf16_bits_to_f32, default_threads
from qconvert.outputs import atomic_output, check_output_path
from qconvert.quant.file_types import FILE_TYPES, QUANTIZATION_VERSION, FileType
from qconvert.quant.importance import attach_importance, write_imatrix_metadata
from qconvert.quant.tensor_types import ModelShape, tensor_type

_SOURCE_DTYPES = {GGMLQuantizationType.F32: np.float32, GGMLQuantizationType.F16: np.float16, GGMLQuantizationType.BF16: np.uint16}
_REPLACED_KEYS = ("general.architecture", "general.file_type", "general.quantization_version")


@dataclass(frozen=True)
class QuantizeOptions:
    file_type: FileType
    force: bool = False
    progress: bool = True
    threads: int | None = None
    imatrix: Path | None = None  # importance matrix file (GGUF or legacy .dat), as llama-quantize --imatrix


def _read_rows(path: Path, offset: int, dtype: np.dtype, row_len: int, start: int, end: int) -> np.ndarray:
    """Rows [start, end) of a tensor stored at `offset`, read (not mapped) so memory stays bounded."""
    with open(path, "rb") as f:
        f.seek(offset + start * row_len * dtype.itemsize)
        rows = np.fromfile(f, dtype=dtype, count=(end - start) * row_len).reshape(end - start, row_len)
    if dtype == np.uint16:  # BF16 bits → float32, exactly
        rows = bf16_bits_to_f32(rows)
    return rows


def _model_shape(header: GGUFHeader, path: Path) -> ModelShape:
    def field(key: str, default=None):
        value = header.get(key, default)
        if value is None:
            raise QConvertError(f"GGUF lacks metadata key {key}", path, "is this a llama.cpp model file?")
        return value

    arch = field("general.architecture")
    n_head = int(field(f"{arch}.attention.head_count"))
    return ModelShape(
        arch=arch,
        n_layer=int(field(f"{arch}.block_count")),
        n_head=n_head,
        n_head_kv=int(field(f"{arch}.attention.head_count_kv", n_head)),
        tied_embeddings=all(t.name != "output.weight" for t in header.tensors),
        n_expert=int(header.get(f"{arch}.expert_count", 0)),
    )


def _copy_metadata(header: GGUFHeader, w: GGUFWriter, file_type: FileType, imatrix: ImportanceMatrix | None, imatrix_path: Path | None) -> None:
    for name, kv in header.kv.items():
        if name not in _REPLACED_KEYS:
            w.add_key_value(name, kv.value, kv.type, sub_type=kv.sub_type)
    w.add_file_type(FILE_TYPES[file_type].ftype)
    w.add_quantization_version(QUANTIZATION_VERSION)
    if imatrix is not None:
        write_imatrix_metadata(w, imatrix, str(imatrix_path))


def plan_quantize(header: GGUFHeader, path: Path, file_type: FileType, has_imatrix: bool = False) -> list[TensorSource]:
    model = _model_shape(header, path)
    size = path.stat().st_size
    plan = []
    for t in header.tensors:
        if t.type not in _SOURCE_DTYPES:
            raise QConvertError(
                f"tensor {t.name} is already quantized ({t.type.name})",
                path,
                "requantizing loses quality; quantize from an f16, bf16 or f32 GGUF",
            )
        out_type = tensor_type(t.name, t.shape, t.type, file_type, model, has_imatrix)
        dtype = np.dtype(_SOURCE_DTYPES[t.type])
        if t.offset + int(np.prod(t.shape, dtype=np.int64)) * dtype.itemsize > size:
            raise QConvertError(f"tensor {t.name} lies past the end of the file (truncated)", path, "re-convert or re-download it")
        plan.append(TensorSource(t.name, t.shape, out_type, partial(_read_rows, path, t.offset, dtype, t.shape[-1])))
    return plan


def quantize_gguf(src: Path, dst: Path, options: QuantizeOptions) -> Path:
    src, dst = Path(src), Path(dst)
    check_output_path(dst, options.force)
    if src.resolve() == dst.resolve():
        raise QConvertError("input and output are the same file", dst, "write to a new file")
    if not src.is_file():
        raise QConvertError("no such GGUF file", src)
    header = read_gguf_header(src)
    imatrix = read_imatrix(Path(options.imatrix)) if options.imatrix is not None else None
    plan = plan_quantize(header, src, options.file_type, imatrix is not None)
    if imatrix is not None:
        plan = attach_importance(plan, imatrix, Path(options.imatrix))
    with atomic_output(dst, options.force) as tmp:
        write_gguf(
            tmp, header.get("general.architecture"), lambda w: _copy_metadata(header, w, options.file_type, imatrix, options.imatrix), plan,
            options.threads or default_threads(), options.progress,
        )
    return dst
