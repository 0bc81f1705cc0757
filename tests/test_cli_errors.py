"""Bad input: one clear error line, exit code 2, and no output (partial or temporary) left behind."""

import json
import shutil

import pytest

from tests.conftest import FIXTURE, assert_one_error, run_cli


def _model_copy(tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(FIXTURE, dst)
    return dst


def _edit_config(model, **changes):
    config = json.loads((model / "config.json").read_text())
    config.update(changes)
    (model / "config.json").write_text(json.dumps(config))


def _break_missing_config(model):
    (model / "config.json").unlink()


def _break_architecture(model):
    _edit_config(model, architectures=["MambaForCausalLM"])


def _break_tokenizer(model):
    (model / "tokenizer.json").unlink()


def _truncate_weights(model):
    path = model / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-4096])


def _corrupt_header(model):
    path = model / "model.safetensors"
    raw = bytearray(path.read_bytes())
    raw[8:40] = b"\xff" * 32
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    "damage, message",
    [
        (_break_missing_config, "missing config.json"),
        (_break_architecture, "unsupported architecture MambaForCausalLM"),
        (_break_tokenizer, "missing tokenizer.json"),
        (_truncate_weights, "truncated"),
        (_corrupt_header, "corrupt safetensors header"),
    ],
    ids=["no-config", "unsupported-arch", "no-tokenizer", "truncated-weights", "corrupt-header"],
)
def test_bad_model_is_one_clear_error_and_no_output(tmp_path, damage, message):
    model = _model_copy(tmp_path)
    damage(model)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = run_cli("gguf", model, "-o", out_dir / "model.gguf")
    assert result.rc == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize(
    "model, changes, message",
    [
        # Q/K rows go into llama.cpp's RoPE order by heads: 128 K rows do not split into 3 heads
        ("tiny-llama", {"num_key_value_heads": 3}, "do not split into 3 heads"),
        # a damaged value is quoted cut short, not whole (both found by `make fuzz`)
        ("tiny-qwen2", {"rope_scaling": {"rope_type": "A" * 5000, "factor": 2.0}}, "rope_scaling type 'AAA"),
    ],
    ids=["heads-do-not-fit-the-rows", "huge-rope-type"],
)
def test_a_config_that_does_not_fit_is_one_short_error(tmp_path, model, changes, message):
    copy = tmp_path / "model"
    shutil.copytree(FIXTURE.parent / model, copy)
    _edit_config(copy, **changes)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = run_cli("gguf", copy, "--type", "q8_0", "-o", out_dir / "model.gguf")
    assert_one_error(result, message, out_dir)
    assert len(result.stderr.strip()) < 400, result.stderr


def test_unsupported_architecture_names_the_supported_ones(tmp_path):
    model = _model_copy(tmp_path)
    _break_architecture(model)
    result = run_cli("gguf", model, "-o", tmp_path / "x.gguf")
    assert "Qwen2ForCausalLM" in result.stderr and "LlamaForCausalLM" in result.stderr


def test_existing_output_is_kept_without_force(tmp_path):
    out = tmp_path / "model.gguf"
    out.write_bytes(b"precious")
    result = run_cli("gguf", FIXTURE, "-o", out)
    assert result.rc == 2 and "--force" in result.stderr
    assert out.read_bytes() == b"precious"
    assert run_cli("gguf", FIXTURE, "-o", out, "--force").rc == 0
    assert out.read_bytes()[:4] == b"GGUF"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf"]


@pytest.mark.parametrize("where", ["missing-dir", "parent-is-a-file"])
def test_unwritable_output_is_a_clear_error(tmp_path, where):
    if where == "missing-dir":
        out = tmp_path / "no" / "such" / "dir" / "model.gguf"
    else:
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "model.gguf"
    result = run_cli("gguf", FIXTURE, "-o", out)
    assert result.rc == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "output directory" in result.stderr


def test_unknown_type_lists_the_valid_ones(tmp_path):
    result = run_cli("gguf", FIXTURE, "-o", tmp_path / "x.gguf", "--type", "q9_z")
    assert result.rc == 2 and "f16" in result.stderr and "bf16" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_ppl_on_a_missing_model_is_a_clear_error(tmp_path):
    result = run_cli("ppl", tmp_path / "nope.gguf", "--text", tmp_path / "t.txt")
    assert result.rc == 2 and "no such model" in result.stderr
