"""`qconvert gguf --gptq`: every decoder-layer weight that the file type quantizes to a block type is
rounded with GPTQ's error compensation inside its GGUF blocks (qconvert.blockq.solve), layer by
layer on the layer-wise driver; the GGUF writer then takes those tensors' bytes as they are.

As in `qconvert gptq`: the sub-layer groups in true-sequential order, one Hessian per group of
linears that read the same input, and each layer's outputs recomputed with its rounded weights
(dequantized as llama.cpp will) before they feed the next layer. The block fits are weighted by the
Hessian's diagonal — the importance matrix of the inputs each linear actually sees — or by a given
importance matrix. A routed expert is solved on the tokens routed to it and becomes one matrix of
its layer's stacked tensor. The solved bytes wait in a spool file beside the output, not in memory.

The asymmetric target (BlockGPTQConfig.asymmetric): the first layer reads the embedding rows the
file will hold, and each linear is fitted to the original model's outputs on the original inputs
(the model as loaded runs alongside: the driver's reference stream), so the rounding of the
embeddings and of earlier layers is compensated too. The original inputs of a layer's linears wait
in a second spool file until the rounded model's inputs are seen.
"""

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from qconvert.blockq.solve import BlockGPTQConfig, act_order, asymmetric_shift, hessian_factor, quantize_blocks
from qconvert.calib.types import CalibInput
from qconvert.convert.arch import DecoderBlock, layer_tensor
from qconvert.convert.moe import stacked_rows
from qconvert.ggml_types import GGMLQuantizationType
from qconvert.gptq.hessian import HessianGroups
from qconvert.hf.safetensors_reader import SafetensorsCheckpoint
from qconvert.imatrix.file import ImatrixEntry, ImportanceMatrix
from qconvert.layerwise.driver import DriverOptions, Group, real_tokens, run_layerwise
from qconvert.layerwise.session import RunOptions, open_session
from qconvert.quant import kernels

log = logging.getLogger(__name__)


class Spool:
    """Solved tensors' bytes in an anonymous file in the output's folder, by GGUF name."""

    def __init__(self, folder: Path):
        self.file = tempfile.TemporaryFile(dir=folder, prefix=".qconvert-spool-")
        self.where: dict[str, tuple[int, tuple[int, int]]] = {}  # name → (offset, (rows, row_bytes))

    def add(self, name: str, data: np.ndarray) -> None:
        self.file.seek(0, os.SEEK_END)
        self.where[name] = (self.file.tell(), data.shape)
        self.file.write(memoryview(np.ascontiguousarray(data)).cast("B"))

    def rows_reader(self, name: str, order: np.ndarray | None) -> Callable[[int, int], np.ndarray]:
        """Rows [start, end) of a tensor's bytes, in `order` (llama.cpp's Q/K row order) if given."""
        offset, (n_rows, row_bytes) = self.where[name]

        def read(start: int, end: int) -> np.ndarray:
            if order is None:
                return self._read(offset + start * row_bytes, (end - start, row_bytes))
            return self._read(offset, (n_rows, row_bytes))[order[start:end]]

        return read

    def stacked_reader(self, parts: list[str]) -> Callable[[int, int], np.ndarray]:
        """Rows [start, end) of equally tall matrices stacked in order (a layer's routed experts)."""
        readers = [self.rows_reader(part, None) for part in parts]
        return partial(stacked_rows, lambda e, lo, hi: readers[e](lo, hi), self.where[parts[0]][1][0])

    def _read(self, offset: int, shape: tuple[int, int]) -> np.ndarray:
        data = os.pread(self.file.fileno(), shape[0] * shape[1], offset)
        return np.frombuffer(data, dtype=np.uint8).reshape(shape)

    def close(self) -> None:
        self.file.close()


class ActivationSpool:
    """Tensors queued by key in an anonymous file in the output's folder, taken back in the order put:
    the original model's inputs of a whole layer's linears wait here, not in memory, until the
    rounded model's inputs are seen."""

    def __init__(self, folder: Path):
        self.file = tempfile.TemporaryFile(dir=folder, prefix=".qconvert-activations-")
        self.queues: dict[object, list[tuple[int, torch.Size, torch.dtype]]] = {}
        self.end = 0

    def put(self, key: object, x: torch.Tensor) -> None:
        data = x.detach().to("cpu").contiguous()
        self.file.seek(self.end)
        self.file.write(memoryview(data.view(torch.uint8).numpy()).cast("B"))
        self.queues.setdefault(key, []).append((self.end, data.shape, data.dtype))
        self.end = self.file.tell()

    def take(self, key: object) -> torch.Tensor | None:
        queue = self.queues.get(key)
        if not queue:
            return None
        offset, shape, dtype = queue.pop(0)
        x = torch.empty(shape, dtype=dtype)
        buffer = x.view(torch.uint8).numpy()
        if os.preadv(self.file.fileno(), [buffer], offset) != buffer.nbytes:
            raise OSError(f"short read from the activation spool at {offset}")
        return x

    def clear(self) -> None:
        self.queues.clear()
        self.file.truncate(0)
        self.end = 0

    def close(self) -> None:
        self.file.close()


@dataclass
class SolvedModel:
    spool: Spool
    importance: ImportanceMatrix  # what the block fits were weighted with: Hessian diagonals, or the given matrix


TypeOf = Callable[[str, tuple[int, int]], GGMLQuantizationType]  # GGUF name, (out, in) → its type in the file


class BlockGPTQAlgorithm(HessianGroups):
    """The layer-wise driver's algorithm: Hessians from the hooks (accumulated where the layer runs),
    a block solve per linear."""

    def __init__(self, block: DecoderBlock, ckpt: SafetensorsCheckpoint, type_of: TypeOf, config: BlockGPTQConfig, spool: Spool, given: ImportanceMatrix | None, threads: int | None, device: torch.device,
                 reference: ActivationSpool | None = None):
        """`reference`: where the original model's inputs wait (the asymmetric target needs one)."""
        super().__init__(device)
        self.block, self.ckpt, self.type_of, self.config, self.spool, self.given, self.threads = block, ckpt, type_of, config, spool, given, threads
        # Σ x² per input column and tokens, by (GGUF tensor, matrix): a routed expert is one matrix of its layer's stack
        self.sums: dict[tuple[str, int], np.ndarray] = {}
        self.counts: dict[tuple[str, int], int] = {}
        self.reference = reference  # per group, batch by batch: the original model's inputs
        self.reference_stream = reference is not None
        self.cross: dict[Group, torch.Tensor] = {}  # per group: Σ (x₀ − x)ᵀx over tokens

    def observe_reference(self, layer_index: int, group: Group, x: torch.Tensor, mask: torch.Tensor) -> None:
        self.reference.put(group, real_tokens(x, mask))

    def observe(self, layer_index: int, group: Group, x: torch.Tensor, mask: torch.Tensor) -> None:
        super().observe(layer_index, group, x, mask)
        original = self.reference.take(group) if self.reference_stream else None
        if original is not None:  # None: a routed expert, whose tokens differ between the streams
            xq = real_tokens(x, mask)
            if group not in self.cross:
                self.cross[group] = torch.zeros(xq.shape[1], xq.shape[1], device=xq.device)
            # in the compute dtype: bfloat16 products are summed in float32 by the gemm, its result
            # rounded once per batch (a relative 0.4% of a correction term)
            self.cross[group] += (original.to(xq.device, xq.dtype) - xq).t() @ xq

    def finish_layer(self, layer_index: int, layer: nn.Module) -> None:
        if self.reference is not None:
            self.reference.clear()

    def stages(self, block: DecoderBlock) -> list[list[Group]]:
        return [list(stage) for stage in block.stages]

    def _solve(self, layer_index: int, layer: nn.Module, group: Group) -> None:
        observed = self.hessians.pop(group, None)
        n_in = layer.get_submodule(group[0]).in_features
        where = f"layer {layer_index} {'+'.join(name.rsplit('.', 1)[-1] for name in group)}"
        if observed is None or not observed.tokens:
            # a routed expert no calibration token reached: nothing to compensate, and (as llama-quantize
            # does for a matrix its imatrix counted no tokens for) uniform importance
            hessian, sum2, tokens = torch.eye(n_in), np.zeros(n_in, dtype=np.float32), 0
        else:
            # the solve's kernels are C on the CPU: the Hessian comes over once per group
            hessian, sum2, tokens = observed.matrix().cpu(), torch.diag(observed.upper).cpu().numpy().astype(np.float32), observed.tokens
        cross = self.cross.pop(group, None)
        perm = act_order(hessian) if self.config.act_order else None
        hinv = hessian_factor(hessian if perm is None else hessian[perm][:, perm], self.config.damp_percent, where)
        shift = asymmetric_shift(cross.cpu().float() * (2.0 / tokens), hinv, perm) if cross is not None and tokens else None
        for name in group:
            linear = layer.get_submodule(name)
            tensor, expert = layer_tensor(name)
            gguf_name, row = f"blk.{layer_index}.{tensor}", expert or 0
            self.sums[(gguf_name, row)], self.counts[(gguf_name, row)] = sum2, tokens
            qtype = self.type_of(gguf_name, tuple(linear.weight.shape))
            if qtype not in kernels.BLOCK_TYPES:
                continue  # stored as it is (F16/F32): the writer reads it from the checkpoint
            if self.given is not None:
                importance = self.given.importance(gguf_name)[row * n_in : (row + 1) * n_in]
            else:
                importance = sum2 / np.float32(tokens) if tokens else np.ones(n_in, dtype=np.float32)
            # the checkpoint's own weights, whatever precision the layer runs in
            weight = torch.from_numpy(self.ckpt.load(f"{self.block.layers_path}.{layer_index}.{name}.weight")).float()
            if shift is not None:
                weight = weight + weight @ shift
            blocks = quantize_blocks(weight, hinv, qtype, importance, self.config, perm, self.threads)
            self.spool.add(gguf_name if expert is None else f"{gguf_name}#{expert}", blocks)
            linear.weight.data = torch.from_numpy(kernels.dequantize(blocks, qtype, linear.in_features)).to(linear.weight.device, linear.weight.dtype)

    def importance_matrix(self, dataset: str, chunk_count: int, chunk_size: int) -> ImportanceMatrix:
        if self.given is not None:
            return self.given
        entries = {}
        for name in sorted({name for name, _ in self.sums}):
            rows = range(1 + max(row for n, row in self.sums if n == name))
            entries[name] = ImatrixEntry(np.stack([self.sums[(name, r)] for r in rows]), np.array([self.counts[(name, r)] for r in rows], dtype=np.float32))
        return ImportanceMatrix(entries, [dataset], chunk_count, chunk_size)


def solve_model(model_dir: Path, calib_input: CalibInput, type_of: TypeOf, config: BlockGPTQConfig, spool_dir: Path, given: ImportanceMatrix | None, options: RunOptions,
                embedding_rows: Callable[[np.ndarray], np.ndarray] | None = None) -> SolvedModel:
    """Run the block solve over every decoder layer of `model_dir`; the bytes go to a spool in `spool_dir`.
    `embedding_rows`: token ids → their input embeddings as the file will hold them (asymmetric only)."""
    session = open_session(model_dir, options)
    calib = session.calibration(calib_input, "GPTQ", options.progress)
    spool = Spool(spool_dir)
    reference = ActivationSpool(spool_dir) if config.asymmetric else None
    try:
        algorithm = BlockGPTQAlgorithm(session.block, session.ckpt, type_of, config, spool, given, options.threads, session.device, reference)
        rounded = None
        if config.asymmetric and embedding_rows is not None:
            ids = torch.unique(calib.input_ids)
            rounded = (ids, torch.from_numpy(embedding_rows(ids.numpy())))
        run_layerwise(model_dir, session.block, session.ckpt, calib, algorithm, DriverOptions(session.device, options.dtype, options.progress, "gptq in blocks"), rounded)
    except BaseException:
        spool.close()
        raise
    finally:
        if reference is not None:
            reference.close()
    dataset = str(calib_input.file) if calib_input.file else f"qconvert calibration set: {calib.summary()}"
    return SolvedModel(spool, algorithm.importance_matrix(dataset, calib.n_samples, calib.seqlen))


# The token_embd types whose importance-weighted fit, with equal weights, beats llama-quantize's rule
# for a tensor without importance. Measured on the fixture / its spread variant (llama-quantize
# --imatrix with and without a unit token_embd entry; the whole file's mean KLD): Q4_0 -9%/-4%,
# Q4_1 -12%/-3%, Q5_0 -18%/-1%, Q3_K -11%/-9%, Q6_K -3%/-1%. Not taken: Q2_K (-7%/-4% there, but
# +7.5% KLD and +0.9% perplexity in the fixture recipe's gate run), Q5_1 -6%/+5%, Q4_K +3%/-2%,
# Q5_K +11%/0%; Q8_0's fit ignores weights.
WEIGHTED_EMBEDDINGS = {
    GGMLQuantizationType.Q4_0, GGMLQuantizationType.Q4_1, GGMLQuantizationType.Q5_0,
    GGMLQuantizationType.Q3_K, GGMLQuantizationType.Q6_K,
}


def embedding_importance(given: ImportanceMatrix | None, embd_type: GGMLQuantizationType, hidden: int, tied: bool) -> np.ndarray | None:
    """The importance weights the file's token_embd is quantized with: a given matrix's entry, or
    unit weights where with_uniform_embeddings() adds them (untied only: a tied token_embd is also
    the output matrix, a product with inputs of its own)."""
    if given is not None:
        return given.importance("token_embd.weight") if "token_embd.weight" in given.entries else None
    return np.ones(hidden, dtype=np.float32) if not tied and embd_type in WEIGHTED_EMBEDDINGS else None


def with_uniform_embeddings(importance: ImportanceMatrix, embd_type: GGMLQuantizationType, hidden: int) -> ImportanceMatrix:
    """The matrix with unit importance for token_embd where its type is one of WEIGHTED_EMBEDDINGS.

    llama.cpp has no importance for the embeddings (they are read by row, not multiplied), so
    llama-quantize rounds them with its rule for a tensor without one (d = max/-8 for Q4_0); the
    weighted fit with equal weights searches each block's parameters for the least squared error
    instead. Written into the matrix itself, so llama-quantize --imatrix with it still gives these bytes."""
    weights = embedding_importance(None, embd_type, hidden, tied=False)
    if weights is None or "token_embd.weight" in importance.entries:
        return importance
    entries = {**importance.entries, "token_embd.weight": ImatrixEntry(weights[None], np.ones(1, dtype=np.float32))}
    return replace(importance, entries=entries)


def with_solved(plan: list, solved: SolvedModel, row_order: Callable[[str, int], np.ndarray | None]) -> list:
    """The GGUF plan with every solved tensor's bytes read from the spool instead of encoded anew."""
    spool, out = solved.spool, []
    for t in plan:
        experts = [f"{t.name}#{e}" for e in range(t.n_mat)]  # a layer's routed experts are each solved on their own
        if t.name in spool.where:
            t, parts = replace(t, read_encoded=spool.rows_reader(t.name, row_order(t.name, t.n_rows))), [t.name]
        elif experts[0] in spool.where:
            t, parts = replace(t, read_encoded=spool.stacked_reader(experts)), experts
        else:
            parts = []
        solved_rows = sum(spool.where[p][1][0] for p in parts)
        if parts and solved_rows != t.n_rows:
            raise AssertionError(f"{t.name}: solved {solved_rows} rows, planned {t.n_rows}")
        out.append(t)
    return out
