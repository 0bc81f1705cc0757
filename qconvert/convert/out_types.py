"""Output types of `qconvert gguf --type`: the GGUF file type and the tensor encoding for each."""

from dataclasses import dataclass
from enum import Enum

import numpy as np
from gguf import GGMLQuantizationType, LlamaFileType, quants

from qconvert.errors import QConvertError


class OutType(str, Enum):
    F32 = "f32"
    F16 = "f16"
    BF16 = "bf16"


@dataclass(frozen=True)
class OutTypeInfo:
    file_type: LlamaFileType  # general.file_type
    tensor_type: GGMLQuantizationType  # for 2-D weights; norms, biases and 1-D tensors stay F32


OUT_TYPES = {
    OutType.F32: OutTypeInfo(LlamaFileType.ALL_F32, GGMLQuantizationType.F32),
    OutType.F16: OutTypeInfo(LlamaFileType.MOSTLY_F16, GGMLQuantizationType.F16),
    OutType.BF16: OutTypeInfo(LlamaFileType.MOSTLY_BF16, GGMLQuantizationType.BF16),
}


def parse_out_type(text: str) -> OutType:
    try:
        return OutType(text.lower())
    except ValueError:
        raise QConvertError(f"unknown type {text!r}", "--type", f"choose one of: {', '.join(t.value for t in OutType)}") from None


def encode(values: np.ndarray, tensor_type: GGMLQuantizationType) -> np.ndarray:
    """Encode float values as GGUF tensor data: F32 and F16 as numpy arrays, BF16 as raw bytes.

    F16 uses numpy's round-to-nearest-even cast, as convert_hf_to_gguf.py does; BF16 uses the gguf
    package's rounding (same as ggml_compute_fp32_to_bf16).
    """
    if tensor_type == GGMLQuantizationType.F32:
        return np.ascontiguousarray(values, dtype=np.float32)
    if tensor_type == GGMLQuantizationType.F16:
        return np.ascontiguousarray(values, dtype=np.float16)
    if tensor_type == GGMLQuantizationType.BF16:
        return quants.quantize(np.ascontiguousarray(values, dtype=np.float32), tensor_type)
    raise ValueError(f"no encoder for {tensor_type.name}")
