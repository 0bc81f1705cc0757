"""Importance weights for GGUF quantization: each tensor's row of an importance matrix, looked up as
llama-quantize does, after checking that the matrix belongs to this model.

A 3-D tensor of stacked experts has one row per expert in the matrix (llama-imatrix counts each
expert's tokens apart): llama-quantize requires n_expert × row_len values and quantizes expert i's
rows with the i-th row; the planned tensor carries them flat and the writer slices them.
"""

import dataclasses
import logging
from pathlib import Path
from typing import Protocol, TypeVar

from qconvert.errors import QConvertError
from qconvert.imatrix.file import ImportanceMatrix

log = logging.getLogger(__name__)


class MetadataWriter(Protocol):
    """gguf's GGUFWriter, or the quantize path's qconvert.quant.gguf_header.Metadata."""

    def add_string(self, key: str, value: str) -> None: ...

    def add_uint32(self, key: str, value: int) -> None: ...


Planned = TypeVar("Planned")  # a planned output tensor (gguf_stream.TensorSource, engine.PlannedTensor): a dataclass with name, shape, row_len, n_mat, importance


def attach_importance(plan: list[Planned], imatrix: ImportanceMatrix, where: Path) -> list[Planned]:
    """The plan with importance weights on every quantized tensor the matrix covers. Tensors it lacks
    are quantized without (llama-quantize does the same); a matrix naming tensors this model does
    not have, or with rows of another width or another number of experts, is from another model: refused."""
    names = {t.name for t in plan}
    foreign = sorted(set(imatrix.entries) - names)
    if foreign:
        raise QConvertError(f"the importance matrix has {foreign[0]}, which this model does not have", where, "was it computed on another model?")
    attached = []
    for t in plan:
        weights = imatrix.importance(t.name) if t.name in imatrix.entries else None
        if weights is not None and weights.size != t.n_mat * t.row_len:
            if t.n_mat == 1:
                problem = f"the importance matrix has {weights.size} columns for {t.name}, whose rows are {t.row_len} long"
            else:
                problem = f"the importance matrix has {weights.size} values for {t.name}, which needs {t.row_len} for each of its {t.n_mat} experts"
            raise QConvertError(problem, where, "was it computed on another model?")
        if weights is None and t.name.startswith("blk.") and t.name.endswith(".weight") and len(t.shape) > 1:
            log.info("no importance weights for %s: quantized without", t.name)
        attached.append(dataclasses.replace(t, importance=weights))
    return attached


def write_imatrix_metadata(w: MetadataWriter, imatrix: ImportanceMatrix, source: str) -> None:
    """The keys llama-quantize --imatrix records: the file (here also "computed in-line from ..."),
    its first dataset, its entry count and, when known, its chunk count; strings cut at 127 bytes."""
    w.add_string("quantize.imatrix.file", _cut(source))
    if imatrix.datasets:
        w.add_string("quantize.imatrix.dataset", _cut(imatrix.datasets[0]))
    w.add_uint32("quantize.imatrix.entries_count", len(imatrix.entries))
    if imatrix.chunk_count > 0:
        w.add_uint32("quantize.imatrix.chunks_count", imatrix.chunk_count)


def _cut(text: str) -> str:
    return text.encode()[:127].decode(errors="ignore")
