"""AWQ's scaling alone changes no function: with clipping off, the --export-compatible checkpoint
(scales folded into norms and linears, stored fp16) gives the original logits within fp16 rounding,
on the fixture, on a model where v → o is scaled too (no GQA), and on a GQA one (where it is not)."""

import json

import pytest
import torch

import qconvert
from tests.awq.conftest import awq_cli
from tests.conftest import FIXTURE
from tests.gptq.models import make_random_llama
from tests.gptq.test_checkpoint import read_tensors

IDS = torch.tensor([[5, 17, 300, 2000, 40, 41, 42, 43, 1000, 7, 99, 3000], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]])


def assert_same_function(scaled, source):
    with torch.inference_mode():
        a, b = qconvert.load(scaled)(IDS).logits, qconvert.load(source)(IDS).logits
    assert float((a - b).abs().max()) < 2e-3 * float(b.abs().max())


@pytest.mark.parametrize("model", ["fixture", "mha", "gqa"])
def test_scaling_without_clipping_keeps_the_logits(model, tmp_path, calib_file):
    source = {"fixture": lambda: FIXTURE, "mha": lambda: make_random_llama(tmp_path / "mha", hidden=384, intermediate=1024, heads=6, kv_heads=6), "gqa": lambda: make_random_llama(tmp_path / "gqa")}[model]()
    out = awq_cli(tmp_path / "scaled", "--calib", calib_file, "--export-compatible", "--no-clip", "--group-size", "64", model=source)
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float16"
    ours, theirs = read_tensors(out), read_tensors(source)
    assert set(ours) == set(theirs)
    changed = {name for name in ours if not torch.equal(torch.from_numpy(ours[name]), torch.from_numpy(theirs[name]))}
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}"
        for name in ("input_layernorm", "self_attn.q_proj", "post_attention_layernorm", "mlp.up_proj", "mlp.down_proj"):
            assert f"{prefix}.{name}.weight" in changed, name
        # v → o is a scaling group only where v's outputs are o's inputs one to one
        assert (f"{prefix}.self_attn.o_proj.weight" in changed) == (model == "mha")
    assert_same_function(out, source)
