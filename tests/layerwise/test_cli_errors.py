"""Bad input that `qconvert gptq` and `qconvert awq` refuse alike, before any work: one clear error
line, exit code 2, no output folder (partial or temporary) left behind; an existing output kept
without --force; Ctrl-C stops with exit code 130 and leaves nothing."""

import json
import shutil

import pytest

from tests.conftest import FIXTURE, assert_one_error, interrupt_cli, run_cli

COMMANDS = ("gptq", "awq")


@pytest.fixture
def out_parent(tmp_path):
    parent = tmp_path / "out"
    parent.mkdir()
    return parent


@pytest.mark.parametrize("command", COMMANDS)
def test_too_few_calibration_tokens(command, out_parent):
    result = run_cli(command, FIXTURE, "-o", out_parent / "q", "--n-samples", "2", "--seqlen", "64")
    assert_one_error(result, f"{command.upper()} needs at least 1024", out_parent)


@pytest.mark.parametrize("command", COMMANDS)
def test_calibration_from_another_tokenizer_is_refused(command, tmp_path, out_parent, calib_file):
    other = tmp_path / "other"
    shutil.copytree(FIXTURE, other)
    config = json.loads((other / "tokenizer_config.json").read_text())
    config["chat_template"] = "{{ messages }}"  # a different chat template is a different tokenizer
    (other / "tokenizer_config.json").write_text(json.dumps(config))
    assert_one_error(run_cli(command, other, "--calib", calib_file, "-o", out_parent / "q"), "different tokenizer", out_parent)


@pytest.mark.parametrize("command", COMMANDS)
def test_unsupported_architecture(command, tmp_path, out_parent, calib_file):
    model = tmp_path / "model"
    shutil.copytree(FIXTURE, model)
    config = json.loads((model / "config.json").read_text())
    config["architectures"] = ["MambaForCausalLM"]
    (model / "config.json").write_text(json.dumps(config))
    assert_one_error(run_cli(command, model, "--calib", calib_file, "-o", out_parent / "q"), "unsupported architecture MambaForCausalLM", out_parent)


@pytest.mark.parametrize("command", COMMANDS)
def test_quantized_input_is_refused(command, tmp_path, out_parent, calib_file):
    model = tmp_path / "model"
    shutil.copytree(FIXTURE, model)
    config = json.loads((model / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemm"}
    (model / "config.json").write_text(json.dumps(config))
    assert_one_error(run_cli(command, model, "--calib", calib_file, "-o", out_parent / "q"), "already quantized", out_parent)


@pytest.mark.parametrize("command", COMMANDS)
def test_existing_output_is_kept_without_force(command, tmp_path, small_calib):
    out = tmp_path / "q"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    result = run_cli(command, FIXTURE, "--calib", small_calib, "-o", out)
    assert result.rc == 2 and "--force" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert (out / "precious.txt").read_text() == "keep me"
    result = run_cli(command, FIXTURE, "--calib", small_calib, "-o", out, "--force")
    assert result.rc == 0, result.stderr
    assert (out / "config.json").is_file() and not (out / "precious.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]


@pytest.mark.parametrize("command", COMMANDS)
def test_ctrl_c_leaves_nothing(command, out_parent, calib_file):
    # the temporary folder appears once layers are being quantized
    rc, stderr = interrupt_cli(command, FIXTURE, "--calib", calib_file, "-o", out_parent / "q", ready=lambda: any(out_parent.iterdir()), settle=0.5)
    assert rc == 130, stderr
    assert "interrupted" in stderr
    assert list(out_parent.iterdir()) == []
