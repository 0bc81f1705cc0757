"""What a stage asks a cluster's scheduler for: CPUs, GPUs and memory, from the stage's own plan.

CPUs are the stage's thread count (0: every core of a node; calibration: one); a `device = "cuda"`
stage asks for one GPU. Memory is an estimate of the stage worker's peak RSS from the model's
tensor sizes (its safetensors header, not its weights) and the stage's options, so that a node is
not packed with more stages than fit in its memory:

- GPTQ, AWQ, imatrix (the layer-by-layer driver): one decoder layer in float32 and in the compute
  dtype, the embedding, the calibration activations (a layer's input, output and residual, and the
  MLP's inner activations) and, for GPTQ, one Hessian per linear of a sub-layer group.
- GGUF (convert and quantize, streamed): the slabs (`qconvert.gguf_stream.SLAB_VALUES`) of source,
  converted and quantized rows, and the importance matrix.
- Evaluation: llama-perplexity maps the whole GGUF; the torch path holds the model and, for KLD, the
  original, in the compute dtype; both hold a context of logits.
- Calibration: the tokenizer and the token ids only.

Every estimate adds BASE_BYTES, what a worker holds before any work (Python, torch, transformers).
"""

import json
from dataclasses import dataclass
from pathlib import Path

from qconvert.pipeline.plan import Stage

MIB = 1 << 20
BASE_BYTES = 640 * MIB  # measured: 240-420 MiB peak RSS for the fixture's stages, whose model is 11 MiB
LAYER_PREFIXES = ("model.layers.", "transformer.h.", "model.decoder.layers.")


@dataclass(frozen=True)
class StageResources:
    cpus: int  # 0: every core of the node (threads = 0)
    gpus: int
    memory_bytes: int


@dataclass(frozen=True)
class ModelSize:
    """From a model folder's config and safetensors header."""

    layer_params: int  # the largest decoder layer's
    embed_params: int
    total_params: int
    hidden: int
    intermediate: int  # the widest MLP input of a layer (experts: the sum of the active ones is not needed: one at a time)
    vocab: int

    @classmethod
    def of(cls, model_dir: Path) -> "ModelSize":
        from qconvert.hf.safetensors_reader import SafetensorsCheckpoint

        config = json.loads((model_dir / "config.json").read_text())
        config = config.get("text_config", config)
        layers: dict[str, int] = {}
        embed = total = 0
        for name, entry in SafetensorsCheckpoint.open(model_dir).entries.items():
            n = 1
            for dim in entry.shape:
                n *= dim
            total += n
            prefix = next((p for p in LAYER_PREFIXES if name.startswith(p)), None)
            if prefix is not None:
                layer = name[len(prefix):].split(".", 1)[0]
                layers[layer] = layers.get(layer, 0) + n
            elif "embed" in name or name.endswith("wte.weight"):
                embed = max(embed, n)
        hidden = int(config.get("hidden_size", 0))
        intermediate = int(max(config.get("intermediate_size", 0) or 0, config.get("moe_intermediate_size", 0) or 0))
        return cls(max(layers.values(), default=0), embed, total, hidden, intermediate, int(config.get("vocab_size", 0)))


def _source_model(stage: Stage, by_name: dict[str, Stage]) -> Path:
    """The Hugging Face folder at the root of a stage's `model` input."""
    while stage.kind != "source":
        stage = by_name[stage.inputs["model"]]
    return Path(stage.options["path"])


def _tokens(stage: Stage, by_name: dict[str, Stage]) -> int:
    calib = by_name.get(stage.inputs.get("calibration", ""))
    if calib is None or calib.kind == "source":  # a calibration file: as many as the default set
        return 128 * 512
    return calib.options["n_samples"] * calib.options["seqlen"]


def _dtype_bytes(options: dict) -> int:
    return 2 if options.get("compute_dtype") in ("bfloat16", "float16") else 4  # "auto" may be float32


def estimate_memory(stage: Stage, by_name: dict[str, Stage], size: ModelSize) -> int:
    """Bytes of peak RSS the stage's worker is expected to reach."""
    o = stage.options
    if stage.kind in ("gptq", "awq", "imatrix") or (stage.kind == "gguf" and o.get("gptq")):
        f = _dtype_bytes(o)
        tokens = _tokens(stage, by_name)
        weights = size.layer_params * (4 + f) + size.embed_params * f
        activations = tokens * (4 * size.hidden + size.intermediate) * f
        hessians = 4 * (3 * size.hidden**2 + size.intermediate**2) if stage.kind in ("gptq", "gguf") else 0
        return BASE_BYTES + weights + activations + hessians
    if stage.kind == "gguf":
        from qconvert.gguf_stream import SLAB_VALUES  # numpy and gguf: not for a Ray worker that only unpickles a job

        imatrix = by_name.get(stage.inputs.get("imatrix", ""))
        imatrix_bytes = 4 * size.total_params // max(size.hidden, 1) if imatrix is not None else 0  # a float per input column
        return BASE_BYTES + 4 * SLAB_VALUES * 4 + imatrix_bytes
    if stage.kind == "eval":
        logits = o["ctx"] * size.vocab * 4 * 3
        upstream = by_name[stage.inputs["model"]]
        if upstream.kind == "gguf":  # llama-perplexity maps the file: at most its f16 size
            return BASE_BYTES + 2 * size.total_params + logits
        models = 2 if "base" in stage.inputs else 1
        return BASE_BYTES + models * 4 * size.total_params + logits
    return BASE_BYTES  # calibration


def stage_resources(stage: Stage, by_name: dict[str, Stage], sizes: dict[Path, ModelSize] | None = None) -> StageResources:
    """`sizes` caches ModelSize per model folder across the stages of a plan."""
    sizes = {} if sizes is None else sizes
    model = _source_model(stage, by_name)
    if model not in sizes:
        sizes[model] = ModelSize.of(model)
    gpus = 1 if stage.options.get("device") == "cuda" else 0
    cpus = int(stage.options["threads"]) if "threads" in stage.options else 1  # calibration: the tokenizer's one thread
    return StageResources(cpus, gpus, estimate_memory(stage, by_name, sizes[model]))
