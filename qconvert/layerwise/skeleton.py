"""A causal LM with no weights in memory: the module tree on the meta device, the embedding and
rotary tables made real only to compute the first layer's inputs, and decoder layers loaded from
the safetensors checkpoint one at a time.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qconvert.convert.arch import DecoderBlock
from qconvert.errors import QConvertError
from qconvert.hf.safetensors_reader import SafetensorsCheckpoint
from qconvert.layerwise import attention as causal_blocks
from qconvert.layerwise.experts import unfuse_experts


class StopForward(Exception):
    """Raised by a hook once it has what it needs: the rest of the forward is not computed."""


class _Recorder(nn.Module):
    """Stands in for decoder layer `index` while the inputs are captured: records its call, passes the
    hidden states through unchanged, and stops the forward after the last layer."""

    def __init__(self, index: int, last: bool, calls: list[dict[str, Any]]):
        super().__init__()
        self.index, self.last, self.calls = index, last, calls

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if args:
            raise QConvertError("decoder layer called with positional arguments", "transformers", "this transformers version is not supported")
        self.calls.append({"hidden": hidden_states, "kwargs": kwargs})
        if self.last:
            raise StopForward
        return hidden_states


@dataclass
class LayerInputs:
    """The calibration activations entering one decoder layer, in batches."""

    hidden: list[torch.Tensor]  # per batch (b, seq, hidden)
    token_mask: list[torch.Tensor]  # per batch (b, seq) bool: real tokens (padding excluded)
    kwargs: list[list[dict[str, Any]]]  # per batch, per layer: attention mask, position embeddings, ...


EmbeddingRows = tuple[torch.Tensor, torch.Tensor]  # token ids (n,), and their input-embedding rows (n, hidden)


class ModelSkeleton:
    def __init__(self, model_dir: Path, block: DecoderBlock, ckpt: SafetensorsCheckpoint, device: torch.device, dtype: torch.dtype):
        from transformers import AutoConfig, AutoModelForCausalLM

        self.block, self.ckpt, self.device, self.dtype = block, ckpt, device, dtype
        try:
            self.config = AutoConfig.from_pretrained(model_dir)
        except (OSError, ValueError) as exc:
            raise QConvertError(f"transformers cannot read config.json: {exc}".splitlines()[0], model_dir) from exc
        self.config.use_cache = False
        with torch.device("meta"):
            # on a CPU, causal attention in blocks of queries (layerwise/attention.py)
            attention = {"attn_implementation": causal_blocks.NAME} if torch.device(device).type == "cpu" else {}
            self.model = AutoModelForCausalLM.from_config(self.config, dtype=dtype, **attention)
        unfuse_experts(self.model)  # one linear per expert projection, named as in the checkpoint
        self.layers = self.model.get_submodule(block.layers_path)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def _load(self, name: str) -> torch.Tensor:
        if name not in self.ckpt.entries:
            raise QConvertError(f"checkpoint has no tensor {name!r}", "checkpoint", "is it complete, and of the architecture config.json names?")
        return torch.from_numpy(self.ckpt.load(name)).to(device=self.device, dtype=self.dtype)

    def _materialize(self, module: nn.Module, prefix: str) -> None:
        state = {name: self._load(f"{prefix}.{name}") for name in module.state_dict()}
        module.load_state_dict(state, strict=True, assign=True)

    def load_layer(self, index: int) -> nn.Module:
        layer = self.layers[index]
        self._materialize(layer, f"{self.block.layers_path}.{index}")
        return layer

    def release_layer(self, index: int) -> None:
        self.layers[index].to("meta")

    def capture_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, batch_size: int, embedding_rows: EmbeddingRows | None = None) -> LayerInputs:
        """Run the embedding (and whatever else precedes layer 0) on every calibration batch; with
        `embedding_rows` written over the checkpoint's rows of those tokens."""
        inner = self.model.get_submodule(self.block.layers_path.rsplit(".", 1)[0])
        embed = self.model.get_input_embeddings()
        self._materialize(embed, next(name for name, m in self.model.named_modules() if m is embed))
        if embedding_rows is not None:
            ids, rows = embedding_rows
            with torch.no_grad():
                embed.weight[ids.to(self.device)] = rows.to(self.device, self.dtype)
        rotary = getattr(inner, "rotary_emb", None)
        if rotary is not None:  # its tables are computed at construction: build it again off the meta device
            with torch.device(self.device):
                inner.rotary_emb = type(rotary)(config=self.config)
        layers = list(self.layers)
        calls: list[dict[str, Any]] = []
        for i in range(len(layers)):
            self.layers[i] = _Recorder(i, i == len(layers) - 1, calls)
        inputs = LayerInputs([], [], [])
        try:
            with torch.inference_mode():
                for start in range(0, input_ids.shape[0], batch_size):
                    ids = input_ids[start : start + batch_size].to(self.device)
                    mask = attention_mask[start : start + batch_size].to(self.device)
                    calls.clear()
                    try:
                        inner(input_ids=ids, attention_mask=mask, use_cache=False)
                    except StopForward:
                        pass
                    inputs.hidden.append(calls[0]["hidden"])
                    inputs.kwargs.append([c["kwargs"] for c in calls])
                    inputs.token_mask.append(mask.bool())
        finally:
            for i, layer in enumerate(layers):
                self.layers[i] = layer
            embed.to("meta")
            if rotary is not None:
                inner.rotary_emb = rotary
        return inputs
