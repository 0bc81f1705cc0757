"""`qconvert.load(path)` (qconvert/__init__.py): any checkpoint qconvert reads or writes as a plain transformers model.

Quantized checkpoints (GPTQ) are unpacked to dense weights, so every format is measured the same
way, on any device, without quantized kernels.
"""

from pathlib import Path

import torch

from qconvert.errors import QConvertError
from qconvert.hf.config import ModelConfig
from qconvert.hf.dequantized import open_checkpoint
from qconvert.layerwise.experts import fused_expert_tensors


def load(path: str | Path, dtype: torch.dtype = torch.float32):
    """A transformers causal LM (in eval mode, on the CPU) with the checkpoint's weights in `dtype`."""
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    model_dir = Path(path)
    config = ModelConfig.from_dir(model_dir)
    transformers.logging.set_verbosity_error()
    if not config.raw.get("quantization_config"):
        try:
            return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
        except (OSError, ValueError) as exc:
            raise QConvertError(f"transformers cannot load the model: {exc}".splitlines()[0], model_dir) from exc

    ckpt = open_checkpoint(model_dir, config.raw)
    hf_config = AutoConfig.from_pretrained(model_dir)
    del hf_config.quantization_config  # the weights below are dense: build a plain model
    model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype)
    names = model.state_dict().keys()
    state = {name: torch.from_numpy(ckpt.load(name)).to(dtype) for name in names if name in ckpt.entries}
    state |= fused_expert_tensors(model, lambda name: torch.from_numpy(ckpt.load(name)).to(dtype))  # MoE: per-expert tensors
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied:
        raise QConvertError(f"checkpoint lacks {sorted(set(missing) - tied)[0]}", model_dir, "the checkpoint is incomplete")
    model.tie_weights()
    return model.eval()
