"""GGUF → GGUF: quantize an f32/f16/bf16 GGUF file to any llama.cpp file type, like llama-quantize.

Metadata is copied byte for byte (file type and quantization version updated), each tensor's type
is chosen by the same rules as llama-quantize, and the native engine (qconvert.quant.engine) quantizes the
data from the input file straight into its place in the output, in chunks, so memory stays
bounded by a few chunks per thread.
"""

import time
from dataclasses import dataclass
from pathlib import Path

from qconvert.errors import QConvertError
from qconvert.ggml_types import GGMLQuantizationType
from qconvert.gguf_read import GGUFHeader, read_gguf_header
from qconvert.imatrix.file import ImportanceMatrix, read_imatrix
from qconvert.numeric import default_threads
from qconvert.outputs import atomic_output, check_output_path
from qconvert.quant.file_types import FILE_TYPES, QUANTIZATION_VERSION, FileType
from qconvert.quant.engine import PlannedTensor, write_quantized
from qconvert.quant.gguf_header import Metadata
from qconvert.quant.importance import attach_importance, write_imatrix_metadata
from qconvert.quant.tensor_types import ModelShape, tensor_type

_SOURCE_TYPES = (GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16)
_REPLACED_KEYS = ("general.architecture", "general.file_type", "general.quantization_version")


@dataclass(frozen=True)
class QuantizeOptions:
    file_type: FileType
    force: bool = False
    progress: bool = True
    threads: int | None = None
    imatrix: Path | None = None  # importance matrix file (GGUF or legacy .dat), as llama-quantize --imatrix


def _model_shape(header: GGUFHeader, path: Path) -> ModelShape:
    def field(key: str, default=None):
        value = header.get(key, default)
        if value is None:
            raise QConvertError(f"GGUF lacks metadata key {key}", path, "is this a llama.cpp model file?")
        return value

    def count(key: str, default=None, least: int = 1) -> int:
        value = field(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise QConvertError(f"GGUF metadata {key} is {value!r}, not a whole number of at least {least}", path, "the file is damaged; re-convert it")
        return value

    arch = field("general.architecture")
    if not isinstance(arch, str):
        raise QConvertError(f"GGUF metadata general.architecture is {arch!r}, not a name", path, "the file is damaged; re-convert it")
    n_head = count(f"{arch}.attention.head_count")
    return ModelShape(
        arch=arch,
        n_layer=count(f"{arch}.block_count", least=0),
        n_head=n_head,
        n_head_kv=count(f"{arch}.attention.head_count_kv", n_head),
        tied_embeddings=all(t.name != "output.weight" for t in header.tensors),
        n_expert=count(f"{arch}.expert_count", 0, least=0),
    )


def _output_metadata(header: GGUFHeader, path: Path, file_type: FileType, imatrix: ImportanceMatrix | None, imatrix_path: Path | None) -> Metadata:
    """The input's entries as they lie in its file, general.architecture first, then the file type,
    the quantization version and the imatrix keys set anew: the order GGUFWriter gave them."""
    copied = Metadata.copied(header, path).entries
    metadata = Metadata({"general.architecture": copied["general.architecture"]})
    metadata.entries.update((key, entry) for key, entry in copied.items() if key not in _REPLACED_KEYS)
    metadata.add_uint32("general.file_type", FILE_TYPES[file_type].ftype)
    metadata.add_uint32("general.quantization_version", QUANTIZATION_VERSION)
    if imatrix is not None:
        write_imatrix_metadata(metadata, imatrix, str(imatrix_path))
    return metadata


def plan_quantize(header: GGUFHeader, path: Path, file_type: FileType, has_imatrix: bool = False) -> list[PlannedTensor]:
    model = _model_shape(header, path)
    plan = []
    for t in header.tensors:
        if not t.shape or 0 in t.shape:
            raise QConvertError(f"tensor {t.name} has shape {t.shape}: no values", path, "the file is damaged; re-convert it")
        if t.type not in _SOURCE_TYPES:
            raise QConvertError(
                f"tensor {t.name} is already quantized ({t.type.name})",
                path,
                "requantizing loses quality; quantize from an f16, bf16 or f32 GGUF",
            )
        # read_gguf_header has checked that every tensor's data lies inside the file
        plan.append(PlannedTensor(t.name, t.shape, t.type, t.offset, tensor_type(t.name, t.shape, t.type, file_type, model, has_imatrix)))
    return plan


@dataclass(frozen=True)
class QuantizeResult:
    path: Path
    seconds: dict[str, float]  # "plan" (reading the header and metadata, planning), then write_quantized's: where the time went


def quantize_gguf(src: Path, dst: Path, options: QuantizeOptions) -> QuantizeResult:
    start = time.perf_counter()
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
    metadata = _output_metadata(header, src, options.file_type, imatrix, options.imatrix)
    planned = time.perf_counter()
    with atomic_output(dst, options.force) as tmp:
        seconds = write_quantized(src, tmp, metadata, header.alignment, plan, options.threads or default_threads(), options.progress)
    return QuantizeResult(dst, {"plan": planned - start, **seconds})
