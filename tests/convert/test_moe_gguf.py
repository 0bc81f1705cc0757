"""Mixture-of-experts models through the GGUF converter: Qwen2-MoE (with its shared expert) and
Qwen3-MoE, small random-weight checkpoints made by transformers (tests/arch_models.py
make_random_moe, one tensor per expert as save_pretrained writes them). The f16 GGUF against
llama.cpp's convert_hf_to_gguf.py (tensors, data bytes, every metadata key), llama.cpp's perplexity
against torch's, every file type against llama-quantize byte for byte (and the 8-expert rules on a
Qwen3-MoE with 8 experts), and importance-weighted quantization with llama-imatrix's own file, whose
expert tensors hold one row per expert, against llama-quantize --imatrix. Also: transformers 5's
fused 3-D expert tensors, slabs that cut through experts, and incomplete checkpoints."""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader
from safetensors.torch import load_file, save_file

from qconvert import gguf_stream
from qconvert.convert.hf_to_gguf import ConvertOptions, convert_hf_to_gguf
from qconvert.imatrix.file import read_imatrix
from qconvert.llama_cpp import run_tool
from qconvert.quant.file_types import FileType
from qconvert.quant.gguf_quantize import QuantizeOptions, quantize_gguf
from tests.arch_models import make_random_moe
from tests.conftest import EVAL_TEXT, assert_one_error, convert, ppl_json, run_cli
from tests.convert.test_against_convert_hf_to_gguf import COSMETIC_KEYS, reference_convert
from tests.quant.gguf_compare import differences, metadata_differences
from tests.quant.test_matches_llama_quantize import llama_quantize

# One type of each block family and mix shape (the kernels are tested on every type elsewhere; what
# is MoE's here is the stacking and the expert rules): keeps the suite's time down.
ALL_TYPES = [FileType.F16, FileType.Q8_0, FileType.Q6_K, FileType.Q5_K_M, FileType.Q4_K_M, FileType.Q4_0, FileType.Q3_K_M, FileType.Q3_K_L, FileType.Q2_K]
IMATRIX_TYPES = [FileType.Q4_K_M, FileType.Q2_K, FileType.Q4_0]
# The types whose mix changes with exactly 8 experts (attn_v and attn_k to Q8_0 in all of them).
EIGHT_EXPERT_TYPES = [FileType.Q2_K, FileType.Q3_K_S, FileType.Q3_K_M, FileType.Q3_K_L, FileType.Q4_K_S, FileType.Q4_K_M, FileType.Q4_0]
PPL_ARGS = ("--text", EVAL_TEXT, "--ctx", "128", "--chunks", "4")
N_EXPERTS, N_USED = 4, 2


@dataclass(frozen=True)
class Moe:
    arch: str
    hf: Path
    ours: Path  # our f16 GGUF
    theirs: Path  # convert_hf_to_gguf.py's
    imatrix: Path  # llama-imatrix's, from theirs


def llama_imatrix(f16: Path, out: Path) -> Path:
    run_tool("llama-imatrix", ["-m", str(f16), "-f", str(EVAL_TEXT), "-o", str(out), "-c", "128", "-b", "128", "--chunks", "8", "-t", "2", "--no-ppl"])
    return out


@pytest.fixture(scope="module", params=["qwen2moe", "qwen3moe"])
def moe(request, tmp_path_factory, llama_tools) -> Moe:
    d = tmp_path_factory.mktemp(request.param)
    hf = make_random_moe(request.param, d / "hf", N_EXPERTS, N_USED)
    theirs = reference_convert(hf, d / "theirs-f16.gguf")
    return Moe(request.param, hf, convert(hf, d / "ours-f16.gguf"), theirs, llama_imatrix(theirs, d / "imatrix.gguf"))


@pytest.fixture(scope="module")
def eight_experts(tmp_path_factory, llama_tools) -> tuple[Path, Path]:
    """A Qwen3-MoE with 8 experts: llama-quantize's Mixtral rules apply."""
    d = tmp_path_factory.mktemp("eight-experts")
    hf = make_random_moe("qwen3moe", d / "hf", n_experts=8, n_used=2)
    return hf, reference_convert(hf, d / "theirs-f16.gguf")


def _types(path: Path) -> dict[str, GGMLQuantizationType]:
    return {t.name: t.tensor_type for t in GGUFReader(path).tensors}


def test_f16_matches_convert_hf_to_gguf(moe):
    assert differences(moe.ours, moe.theirs) == []
    assert metadata_differences(moe.ours, moe.theirs, ignore=COSMETIC_KEYS) == []
    reader = GGUFReader(moe.ours)
    fields = {k: f.contents() for k, f in reader.fields.items()}
    assert (fields[f"{moe.arch}.expert_count"], fields[f"{moe.arch}.expert_used_count"]) == (N_EXPERTS, N_USED)
    stacked = {t.name: t for t in reader.tensors}["blk.1.ffn_up_exps.weight"]
    assert stacked.tensor_type == GGMLQuantizationType.F16 and int(stacked.shape[2]) == N_EXPERTS  # ne: (hidden, ffn, experts)
    assert _types(moe.ours)["blk.1.ffn_gate_inp.weight"] == GGMLQuantizationType.F32  # the router stays F32
    assert ("blk.0.ffn_gate_inp_shexp.weight" in _types(moe.ours)) == (moe.arch == "qwen2moe")


def test_llama_cpp_perplexity_matches_torch(moe):
    gguf, hf = ppl_json(moe.ours, *PPL_ARGS), ppl_json(moe.hf, *PPL_ARGS)
    assert gguf["ppl"] == pytest.approx(hf["ppl"], rel=0.01)
    assert gguf["ppl"] < 0.9 * 4096 or gguf["ppl"] > 1.1 * 4096  # peaked outputs: the comparison means something


def test_experts_receive_tokens(moe):
    """llama-imatrix counts each expert's tokens apart: routing is real (every expert used, unevenly),
    and each token reaches N_USED experts."""
    matrix = read_imatrix(moe.imatrix)
    tokens = matrix.entries["blk.0.attn_q.weight"].counts[0]
    for layer in range(2):
        for proj in ("gate", "up", "down"):
            counts = matrix.entries[f"blk.{layer}.ffn_{proj}_exps.weight"].counts
            assert counts.shape == (N_EXPERTS,) and (counts > 0).all() and len(set(counts)) > 1, counts
            assert counts.sum() == N_USED * tokens


@pytest.mark.parametrize("file_type", ALL_TYPES, ids=[t.value for t in ALL_TYPES])
def test_one_step_quantized_matches_llama_quantize(moe, tmp_path, file_type):
    reference, ours = tmp_path / "reference.gguf", tmp_path / "ours.gguf"
    llama_quantize(moe.theirs, reference, file_type)
    result = run_cli("gguf", moe.hf, "--type", file_type.value, "-o", ours)
    assert result.rc == 0, result.stderr
    assert differences(ours, reference) == []


@pytest.mark.parametrize("file_type", EIGHT_EXPERT_TYPES, ids=[t.value for t in EIGHT_EXPERT_TYPES])
def test_eight_expert_rules_match_llama_quantize(eight_experts, tmp_path, file_type):
    hf, theirs = eight_experts
    reference, ours = tmp_path / "reference.gguf", tmp_path / "ours.gguf"
    llama_quantize(theirs, reference, file_type)
    assert run_cli("gguf", hf, "--type", file_type.value, "-o", ours).rc == 0
    assert differences(ours, reference) == []
    assert _types(ours)["blk.0.attn_v.weight"] == _types(ours)["blk.0.attn_k.weight"] == GGMLQuantizationType.Q8_0


@pytest.mark.parametrize("file_type", IMATRIX_TYPES, ids=[t.value for t in IMATRIX_TYPES])
def test_quantize_with_imatrix_matches_llama_quantize(moe, tmp_path, file_type):
    reference, ours, one_step = tmp_path / "reference.gguf", tmp_path / "ours.gguf", tmp_path / "one-step.gguf"
    run_tool("llama-quantize", ["--imatrix", str(moe.imatrix), str(moe.theirs), str(reference), file_type.value.upper(), "2"])
    result = run_cli("quantize", moe.theirs, ours, file_type.value, "--imatrix", moe.imatrix, "--threads", 2)
    assert result.rc == 0, result.stderr
    assert differences(ours, reference) == []
    assert metadata_differences(ours, reference) == []
    result = run_cli("gguf", moe.hf, "--type", file_type.value, "--imatrix", moe.imatrix, "-o", one_step)
    assert result.rc == 0, result.stderr
    assert differences(one_step, reference) == []


def test_each_expert_is_quantized_with_its_own_importance(moe, tmp_path, monkeypatch):
    """The control for the test above: weighting every expert by expert 0's row, as a 2-D tensor
    would be, gives other bytes, from expert 1 on."""
    import dataclasses

    from qconvert.quant import gguf_quantize

    right, wrong = tmp_path / "right.gguf", tmp_path / "wrong.gguf"
    options = QuantizeOptions(FileType.Q4_K_M, progress=False, imatrix=moe.imatrix)
    quantize_gguf(moe.theirs, right, options)
    attach = gguf_quantize.attach_importance

    def expert_0_everywhere(plan, imatrix, where):
        return [dataclasses.replace(t, importance=np.tile(t.importance[: t.row_len], t.n_mat)) if t.importance is not None and t.n_mat > 1 else t
                for t in attach(plan, imatrix, where)]

    monkeypatch.setattr(gguf_quantize, "attach_importance", expert_0_everywhere)
    quantize_gguf(moe.theirs, wrong, options)
    problems = differences(wrong, right)
    assert problems and all("_exps.weight" in p for p in problems), problems


def test_slabs_cut_through_experts(moe, tmp_path, monkeypatch):
    """Slabs of 3 rows of 256 (6 of 128, 12 of 64) end inside experts: each expert's rows are still
    read from its own tensor and weighted by its own importance row."""
    reference, ours = tmp_path / "reference.gguf", tmp_path / "ours.gguf"
    run_tool("llama-quantize", ["--imatrix", str(moe.imatrix), str(moe.theirs), str(reference), "Q4_K_M", "2"])
    monkeypatch.setattr(gguf_stream, "SLAB_VALUES", 3 * 256 + 1)
    convert_hf_to_gguf(moe.hf, ours, ConvertOptions(FileType.Q4_K_M, progress=False, imatrix=moe.imatrix))
    assert differences(ours, reference) == []


def _fused_copy(src: Path, dst: Path) -> Path:
    """`src` with each layer's experts in transformers 5's fused tensors: gate_up_proj
    (experts, 2 × ffn, hidden), each expert's gate rows then its up rows, and down_proj (experts, hidden, ffn)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors"))
    state = load_file(src / "model.safetensors")
    config = json.loads((src / "config.json").read_text())
    n = config.get("num_local_experts") or config["num_experts"]
    fused = {k: v for k, v in state.items() if ".mlp.experts." not in k}
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}.mlp.experts"
        fused[f"{p}.gate_up_proj"] = torch.stack([torch.cat([state[f"{p}.{e}.gate_proj.weight"], state[f"{p}.{e}.up_proj.weight"]]) for e in range(n)])
        fused[f"{p}.down_proj"] = torch.stack([state[f"{p}.{e}.down_proj.weight"] for e in range(n)])
    save_file(fused, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def test_fused_expert_tensors_convert_as_per_expert_ones(moe, tmp_path):
    fused = _fused_copy(moe.hf, tmp_path / "fused")
    ours = convert(fused, tmp_path / "ours.gguf")
    assert differences(ours, moe.theirs) == []
    assert differences(ours, reference_convert(fused, tmp_path / "theirs.gguf")) == []


def _drop(src: Path, dst: Path, name: str) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors"))
    state = load_file(src / "model.safetensors")
    del state[name]
    save_file(state, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def test_missing_expert_is_a_clear_error(moe, tmp_path):
    model = _drop(moe.hf, tmp_path / "hf", "model.layers.1.mlp.experts.2.up_proj.weight")
    (tmp_path / "out").mkdir()
    assert_one_error(run_cli("gguf", model, "-o", tmp_path / "out" / "m.gguf"), "layer 1 has up_proj for experts 0, 1, 3, config.json says 4 experts", tmp_path / "out")


def test_dense_layers_in_a_moe_model_are_refused(tmp_path):
    """llama.cpp's qwen3moe loads experts in every layer: mlp_only_layers cannot convert."""
    model = make_random_moe("qwen3moe", tmp_path / "hf")
    config = json.loads((model / "config.json").read_text())
    state = load_file(model / "model.safetensors")
    for proj in ("gate", "up", "down"):  # layer 1 as a dense MLP (mlp_only_layers = [1])
        for e in range(N_EXPERTS):
            del state[f"model.layers.1.mlp.experts.{e}.{proj}_proj.weight"]
        rows, cols = (config["intermediate_size"], config["hidden_size"])[:: -1 if proj == "down" else 1]
        state[f"model.layers.1.mlp.{proj}_proj.weight"] = torch.zeros(rows, cols, dtype=torch.float16)
    del state["model.layers.1.mlp.gate.weight"]
    save_file(state, model / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "out").mkdir()
    assert_one_error(run_cli("gguf", model, "-o", tmp_path / "out" / "m.gguf"), "has layers with a dense MLP", tmp_path / "out")


def test_importance_of_another_expert_count_is_refused(moe, eight_experts, tmp_path):
    """An imatrix with 8 rows per expert tensor does not belong to a 4-expert model."""
    if moe.arch != "qwen3moe":
        pytest.skip("the 8-expert model is a Qwen3-MoE")
    other = llama_imatrix(eight_experts[1], tmp_path / "eight.gguf")
    (tmp_path / "out").mkdir()
    result = run_cli("quantize", moe.theirs, tmp_path / "out" / "q.gguf", "q4_k_m", "--imatrix", other)
    assert_one_error(result, f"for each of its {N_EXPERTS} experts", tmp_path / "out")


def test_stacked_reads_only_touch_the_rows_asked_for(moe):
    """The stacked tensor is virtual: rows straddling two experts come from the two experts' tensors."""
    from qconvert.convert.arch import arch_spec
    from qconvert.convert.hf_to_gguf import plan_tensors
    from qconvert.hf.config import ModelConfig
    from qconvert.hf.dequantized import open_checkpoint

    config = ModelConfig.from_dir(moe.hf)
    ckpt = open_checkpoint(moe.hf, config.raw)
    plan = {t.name: t for t in plan_tensors(ckpt, config, arch_spec(config.architecture, moe.hf), FileType.F16)}
    t = plan["blk.1.ffn_down_exps.weight"]
    rows = t.shape[1]
    got = t.read_rows(rows - 2, rows + 3)
    expert0, expert1 = (ckpt.load(f"model.layers.1.mlp.experts.{e}.down_proj.weight") for e in (0, 1))
    np.testing.assert_array_equal(got, np.concatenate([expert0[-2:], expert1[:3]]))
