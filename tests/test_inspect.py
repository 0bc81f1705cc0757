"""`qconvert inspect` on a GGUF file and on an HF folder."""

from tests.conftest import FIXTURE, run_cli


def test_inspect_gguf_shows_metadata_and_tensor_table(fixture_f16):
    result = run_cli("inspect", fixture_f16)
    assert result.rc == 0, result.stderr
    out = result.stdout
    assert "general.architecture = 'qwen2'" in out
    assert "tokenizer.ggml.pre = 'qwen2'" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  blk.") or line.startswith("  token_embd")}
    assert rows["token_embd.weight"][1:3] == ["256x4096", "F16"]
    assert rows["blk.0.attn_norm.weight"][1:4] == ["256", "F32", "1,024"]
    assert rows["blk.3.ffn_down.weight"][1:4] == ["768x256", "F16", "393,216"]


def test_inspect_hf_folder_shows_architecture_and_tensors():
    result = run_cli("inspect", FIXTURE)
    assert result.rc == 0, result.stderr
    assert "architecture: Qwen2ForCausalLM" in result.stdout
    assert "model.layers.0.self_attn.q_proj.bias" in result.stdout


def test_inspect_something_else_is_a_clear_error(tmp_path):
    result = run_cli("inspect", tmp_path / "nothing")
    assert result.rc == 2 and "nothing to inspect" in result.stderr
