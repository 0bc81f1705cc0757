"""The driver's output cache: GPTQ's true-sequential passes with reuse see exactly the activations a
plain recomputation gives, and each linear runs once per batch and weight change."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from qconvert.convert.arch import QWEN2
from qconvert.layerwise.reuse import OutputCache, Tail
from qconvert.layerwise.skeleton import StopForward

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2)
    return LlamaForCausalLM(config).eval()


def _count_runs(layer: torch.nn.Module, names: tuple[str, ...]) -> dict[str, int]:
    runs = dict.fromkeys(names, 0)
    for name in names:
        module = layer.get_submodule(name)

        def counted(x, _forward=module.forward, _name=name):
            runs[_name] += 1
            return _forward(x)

        module.forward = counted
    return runs


def _pass(model: LlamaForCausalLM, ids: torch.Tensor, group: tuple[str, ...] | None) -> torch.Tensor:
    """One pass over a batch; with `group`, stops as the first of its linears is called (as the
    driver does) and returns its input."""
    seen = []

    def hook(module, args):
        seen.append(args[0].clone())
        raise StopForward

    handles = [model.model.layers[0].get_submodule(name).register_forward_pre_hook(hook) for name in group or ()]
    try:
        out = model.model(input_ids=ids).last_hidden_state
    except StopForward:
        out = seen[0]
    finally:
        for handle in handles:
            handle.remove()
    return out


def _true_sequential(cached: LlamaForCausalLM, plain: LlamaForCausalLM, cache: OutputCache, counting: dict) -> None:
    """GPTQ's stages and final pass over two batches, the cached model's activations checked against
    the plain one's at every step; the linears of each stage get the same new weights in both."""
    layer = cached.model.layers[0]
    batches = [torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(b)) for b in range(2)]
    stages = [group for stage in QWEN2.block.stages for group in stage]
    with torch.inference_mode():
        for step, group in enumerate(stages + [None]):
            for b, ids in enumerate(batches):
                cache.start_pass(b)
                counting["on"] = True
                got = _pass(cached, ids, group)
                counting["on"] = False  # the plain model's passes are not counted
                want = _pass(plain, ids, group)
                assert torch.equal(got, want), f"pass {step}, batch {b}"
            if group is None:
                break
            for name in group:
                delta = torch.randn_like(layer.get_submodule(name).weight) * 0.05
                layer.get_submodule(name).weight += delta
                plain.model.layers[0].get_submodule(name).weight += delta
            cache.weights_changed(group)


def test_true_sequential_passes_reuse_and_match_recomputation(monkeypatch):
    cached, plain = _model(), _model()
    plain.load_state_dict(cached.state_dict())
    layer = cached.model.layers[0]
    linears = QWEN2.block.linears
    counting = {"on": False, "attention": 0}  # the attention's score computations in the cached passes
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def counted(*args, **kwargs):
        counting["attention"] += counting["on"]
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counted)
    tails: dict = {}
    for run in range(2):  # the second as the next decoder layer: what the first taught is known
        runs = _count_runs(layer, linears)
        cache = OutputCache(layer, linears, tails)
        counting["attention"] = 0
        _true_sequential(cached, plain, cache, counting)
        # each linear ran once per batch, after its last weight change; nothing before it
        assert runs == dict.fromkeys(linears, 2)
        # the scores: for o_proj's stage, and again once o_proj changed until the attention's tail is known
        assert counting["attention"] == (4 if run == 0 else 2)
        assert tails == {"self_attn": Tail("self_attn.o_proj", 0, 2), "mlp": Tail("mlp.down_proj", None, 0)}
        cache.close()
        assert all(layer.get_submodule(n).forward.__name__ == "counted" for n in linears)  # unwrapped again
        assert not any(layer.get_submodule(n)._forward_pre_hooks for n in linears)
