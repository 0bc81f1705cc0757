"""Bad input to `qconvert gptq`: one clear error line, exit code 2, no output folder (partial or
temporary) left behind; Ctrl-C stops with exit code 130 and leaves nothing."""

import json
import shutil

import pytest

from tests.conftest import FIXTURE, assert_one_error, interrupt_cli, run_cli
from tests.gptq.models import make_random_llama


@pytest.mark.parametrize(
    "args, message",
    [
        (("--bits", "5"), "unsupported bits 5"),
        (("--group-size", "100"), "unsupported group size 100"),
        (("--damp", "0"), "damping 0.0 is not between 0 and 1"),
        (("--device", "tpu"), "unknown device 'tpu'"),
        (("--compute-dtype", "int8"), "unknown compute dtype 'int8'"),
        (("--n-samples", "2", "--seqlen", "64"), "GPTQ needs at least 1024"),
        (("--max-shard-size", "lots"), "cannot read size 'lots'"),
    ],
    ids=["bits", "group-size", "damp", "device", "compute-dtype", "too-few-tokens", "shard-size"],
)
def test_bad_options(tmp_path, args, message):
    out_parent = tmp_path / "out"
    out_parent.mkdir()
    assert_one_error(run_cli("gptq", FIXTURE, "-o", out_parent / "q", *args), message, out_parent)


def test_calibration_from_another_tokenizer_is_refused(tmp_path, calib_file):
    other = tmp_path / "other"
    shutil.copytree(FIXTURE, other)
    config = json.loads((other / "tokenizer_config.json").read_text())
    config["chat_template"] = "{{ messages }}"  # a different chat template is a different tokenizer
    (other / "tokenizer_config.json").write_text(json.dumps(config))
    out_parent = tmp_path / "out"
    out_parent.mkdir()
    assert_one_error(run_cli("gptq", other, "--calib", calib_file, "-o", out_parent / "q"), "different tokenizer", out_parent)


def test_unsupported_architecture(tmp_path, calib_file):
    model = tmp_path / "model"
    shutil.copytree(FIXTURE, model)
    config = json.loads((model / "config.json").read_text())
    config["architectures"] = ["MambaForCausalLM"]
    (model / "config.json").write_text(json.dumps(config))
    out_parent = tmp_path / "out"
    out_parent.mkdir()
    assert_one_error(run_cli("gptq", model, "--calib", calib_file, "-o", out_parent / "q"), "unsupported architecture MambaForCausalLM", out_parent)


def test_width_that_cannot_be_packed(tmp_path, calib_file):
    model = make_random_llama(tmp_path / "odd", hidden=320, intermediate=1000, heads=5, kv_heads=5)
    out_parent = tmp_path / "out"
    out_parent.mkdir()
    result = run_cli("gptq", model, "--calib", calib_file, "-o", out_parent / "q")
    assert_one_error(result, "down_proj is 320×1000", out_parent)


def test_quantized_input_is_refused(tmp_path, gptq_4bit, calib_file):
    out_parent = tmp_path / "out"
    out_parent.mkdir()
    assert_one_error(run_cli("gptq", gptq_4bit, "--calib", calib_file, "-o", out_parent / "q"), "already quantized", out_parent)


def test_existing_output_is_kept_without_force(tmp_path, calib_file):
    out = tmp_path / "q"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    result = run_cli("gptq", FIXTURE, "--calib", calib_file, "-o", out, "--bits", "8")
    assert result.rc == 2 and "--force" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert (out / "precious.txt").read_text() == "keep me"
    result = run_cli("gptq", FIXTURE, "--calib", calib_file, "-o", out, "--bits", "8", "--force")
    assert result.rc == 0, result.stderr
    assert (out / "config.json").is_file() and not (out / "precious.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]


def test_ctrl_c_leaves_nothing(tmp_path, calib_file):
    out_parent = tmp_path / "out"
    out_parent.mkdir()
    # the temporary folder appears once layers are being quantized
    rc, stderr = interrupt_cli("gptq", FIXTURE, "--calib", calib_file, "-o", out_parent / "q", ready=lambda: any(out_parent.iterdir()), settle=0.5)
    assert rc == 130, stderr
    assert "interrupted" in stderr
    assert list(out_parent.iterdir()) == []
