"""The driver's reference stream: while an algorithm changes the layers, the model as loaded runs
alongside on the checkpoint's embeddings, and the changed model's first layer reads the rounded
embedding rows it is given. Both streams' linear inputs are checked against transformers' own
forward of the trained fixture (hooks on the linears): the original model, and the model with the
rows replaced and every linear changed as the algorithm changed it."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from qconvert.calib.store import CalibrationSet
from qconvert.convert.arch import QWEN2
from qconvert.hf.safetensors_reader import SafetensorsCheckpoint
from qconvert.layerwise.driver import DriverOptions, real_tokens, run_layerwise
from tests.conftest import FIXTURE

BLOCK = QWEN2.block
WATCHED = (BLOCK.stages[0][0], BLOCK.stages[-1][0])  # q/k/v, and down_proj
SHRINK = 0.9  # what the algorithm does to every linear it processes


class Recording:
    """Records the watched groups' inputs in both streams and shrinks every linear, stage by stage."""

    propagate_original = False
    reference_stream = True

    def __init__(self):
        self.reference: dict[tuple[int, tuple], list[torch.Tensor]] = {}
        self.observed: dict[tuple[int, tuple], list[torch.Tensor]] = {}

    def stages(self, block):
        return [list(stage) for stage in block.stages]

    def observe_reference(self, index, group, x, mask):
        if group in WATCHED:
            self.reference.setdefault((index, group), []).append(real_tokens(x, mask).clone())

    def observe(self, index, group, x, mask):
        if group in WATCHED:
            self.observed.setdefault((index, group), []).append(real_tokens(x, mask).clone())

    def process(self, index, layer, stage, calls):
        for group in stage:
            for name in group:
                layer.get_submodule(name).weight.data *= SHRINK

    def finish_layer(self, index, layer):
        pass


def hf_inputs(model, ids: torch.Tensor) -> dict[tuple[int, tuple], torch.Tensor]:
    """transformers' inputs of the watched groups' first linears, every layer, (tokens, width)."""
    seen, handles = {}, []
    for index, layer in enumerate(model.model.layers):
        for group in WATCHED:
            def hook(module, args, key=(index, group)):
                seen[key] = args[0].reshape(-1, args[0].shape[-1]).clone()

            handles.append(layer.get_submodule(group[0]).register_forward_pre_hook(hook))
    with torch.inference_mode():
        model(input_ids=ids)
    for handle in handles:
        handle.remove()
    return seen


@pytest.fixture(scope="module")
def streams():
    # two batches of the driver (8192 tokens each at most), the second short
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 4000, (72, 128), generator=generator)
    calib = CalibrationSet(ids, torch.ones_like(ids), manifest=None)
    token_ids = torch.unique(ids)
    original = AutoModelForCausalLM.from_pretrained(FIXTURE, dtype=torch.float32).eval()
    rounded = original.model.embed_tokens.weight[token_ids].detach() + 0.02 * torch.randn(len(token_ids), 256, generator=generator)
    recording = Recording()
    run_layerwise(FIXTURE, BLOCK, SafetensorsCheckpoint.open(FIXTURE), calib, recording, DriverOptions(progress=False), (token_ids, rounded))
    changed = AutoModelForCausalLM.from_pretrained(FIXTURE, dtype=torch.float32).eval()
    with torch.no_grad():
        changed.model.embed_tokens.weight[token_ids] = rounded
        for layer in changed.model.layers:
            for name in BLOCK.linears:
                layer.get_submodule(name).weight *= SHRINK
    return recording, hf_inputs(original, ids), hf_inputs(changed, ids)


@pytest.mark.parametrize("layer", [0, 1, 3])
@pytest.mark.parametrize("group", WATCHED, ids=["qkv", "down"])
def test_each_stream_is_what_transformers_computes(streams, layer, group):
    recording, original, changed = streams
    reference, observed = torch.cat(recording.reference[(layer, group)]), torch.cat(recording.observed[(layer, group)])
    torch.testing.assert_close(reference, original[(layer, group)], rtol=1e-4, atol=1e-4)  # the model as loaded
    torch.testing.assert_close(observed, changed[(layer, group)], rtol=1e-4, atol=1e-4)  # from the rounded rows, changed
    assert not torch.allclose(observed, original[(layer, group)], rtol=1e-3, atol=1e-3)  # the streams do differ
