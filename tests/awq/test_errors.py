"""Bad options to `qconvert awq`: one clear error line, exit code 2, no output folder (partial or
temporary) left behind. What GPTQ and AWQ refuse alike is in tests/layerwise/test_cli_errors.py."""

import pytest

from tests.conftest import FIXTURE, assert_one_error, run_cli
from tests.gptq.models import make_random_llama


@pytest.mark.parametrize(
    "args, message",
    [
        (("--bits", "3"), "AWQ GEMM checkpoints hold 4-bit weights, not 3-bit"),
        (("--bits", "9", "--export-compatible"), "unsupported bits 9"),
        (("--group-size", "0"), "unsupported group size 0"),
        (("--search-tokens", "-1"), "search tokens -1 is negative"),
        (("--gguf-type", "q9_k"), "unknown type 'q9_k'"),
        (("--gguf-type", "f16"), "f16 is not a quantized GGUF type"),
        (("--device", "tpu"), "unknown device 'tpu'"),
        (("--compute-dtype", "int8"), "unknown compute dtype 'int8'"),
    ],
    ids=["packed-bits", "export-bits", "group-size", "search-tokens", "gguf-type", "gguf-f16", "device", "compute-dtype"],
)
def test_bad_options(tmp_path, args, message):
    out_parent = tmp_path / "out"
    out_parent.mkdir()
    assert_one_error(run_cli("awq", FIXTURE, "-o", out_parent / "q", *args), message, out_parent)


def test_group_size_the_gemm_format_cannot_hold_names_the_ones_that_fit(tmp_path, small_calib):
    model = make_random_llama(tmp_path / "llama576")  # hidden 576, ffn 1536
    out_parent = tmp_path / "out"
    out_parent.mkdir()
    result = run_cli("awq", model, "--calib", small_calib, "-o", out_parent / "q", "--group-size", "128")
    assert_one_error(result, "group size 128 does not divide", out_parent)
    assert "group sizes that fit every width (576, 1536): 16, 32, 64, -1" in result.stderr
    # the fp16 export takes it: the last group of each row is partial
    assert run_cli("awq", model, "--calib", small_calib, "-o", out_parent / "q", "--group-size", "128", "--export-compatible").rc == 0
