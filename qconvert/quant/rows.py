"""The row geometry of a planned output tensor, shared by the two GGUF writers (gguf_stream's
TensorSource and the quantize engine's PlannedTensor): a tensor is quantized row by row."""

import numpy as np

from qconvert.ggml_types import GGML_QUANT_SIZES


class RowLayout:
    """For a dataclass with `shape` (numpy order; the last axis is the row) and `out_type`."""

    @property
    def row_len(self) -> int:
        return self.shape[-1]

    @property
    def n_rows(self) -> int:
        return int(np.prod(self.shape[:-1], dtype=np.int64))

    @property
    def n_mat(self) -> int:
        """Matrices stacked in the tensor: the experts of a 3-D tensor, else 1."""
        return self.shape[0] if len(self.shape) == 3 else 1

    @property
    def row_bytes(self) -> int:
        block, nbytes = GGML_QUANT_SIZES[self.out_type]
        return self.row_len // block * nbytes
