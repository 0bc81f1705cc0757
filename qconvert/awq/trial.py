"""How the scale search fake-quantizes its trial weights: on AutoAWQ's per-group grid (for AWQ
checkpoints), or exactly as llama.cpp will store each tensor (for fp16 exports aimed at a GGUF type).

A search that assumes one grid and a GGUF quantizer that uses another optimise different things:
k-quants pick their own sub-block scales and minimums, and llama-quantize's mixing rules give some
tensors more bits. The GGUF trial runs each linear through the C block quantizer (byte-identical
to llama-quantize) with the type that tensor gets in that file.
"""

import torch
from gguf import GGMLQuantizationType as T

from qconvert.awq.grid import fake_quantize
from qconvert.convert.arch import layer_tensor
from qconvert.quant import kernels
from qconvert.quant.file_types import FileType
from qconvert.quant.tensor_types import ModelShape, tensor_type


class GridTrial:
    def __init__(self, bits: int, group_size: int, zero_point: bool):
        self.bits, self.group_size, self.zero_point = bits, group_size, zero_point

    def __call__(self, layer_index: int, name: str, w: torch.Tensor) -> torch.Tensor:
        return fake_quantize(w, self.bits, self.group_size, self.zero_point)


class GGUFTrial:
    def __init__(self, file_type: FileType, model: ModelShape):
        self.file_type, self.model = file_type, model

    def qtype(self, layer_index: int, name: str, shape: tuple[int, int]) -> T:
        tensor, expert = layer_tensor(name)
        stored = shape if expert is None else (self.model.n_expert, *shape)  # one matrix of the stacked experts
        return tensor_type(f"blk.{layer_index}.{tensor}", stored, T.F16, self.file_type, self.model)

    def __call__(self, layer_index: int, name: str, w: torch.Tensor) -> torch.Tensor:
        rows = w.half().cpu().numpy()  # the export stores fp16, and the GGUF quantizer reads that
        qtype = self.qtype(layer_index, name, tuple(w.shape))
        if qtype == T.F16:
            return w.half().float()
        return torch.from_numpy(kernels.dequantize(kernels.quantize(rows, qtype), qtype, w.shape[1])).to(w.device)
