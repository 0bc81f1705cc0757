"""Bad options to `qconvert gptq`: one clear error line, exit code 2, no output folder (partial or
temporary) left behind. What GPTQ and AWQ refuse alike is in tests/layerwise/test_cli_errors.py."""

import pytest

from tests.conftest import FIXTURE, assert_one_error, run_cli
from tests.gptq.models import make_random_llama


@pytest.mark.parametrize(
    "args, message",
    [
        (("--bits", "5"), "unsupported bits 5"),
        (("--group-size", "100"), "unsupported group size 100"),
        (("--damp", "0"), "damping 0.0 is not between 0 and 1"),
        (("--device", "tpu"), "unknown device 'tpu'"),
        (("--compute-dtype", "int8"), "unknown compute dtype 'int8'"),
        (("--max-shard-size", "lots"), "cannot read size 'lots'"),
    ],
    ids=["bits", "group-size", "damp", "device", "compute-dtype", "shard-size"],
)
def test_bad_options(tmp_path, args, message):
    out_parent = tmp_path / "out"
    out_parent.mkdir()
    assert_one_error(run_cli("gptq", FIXTURE, "-o", out_parent / "q", *args), message, out_parent)


def test_width_that_cannot_be_packed(tmp_path, calib_file):
    model = make_random_llama(tmp_path / "odd", hidden=320, intermediate=1000, heads=5, kv_heads=5)
    out_parent = tmp_path / "out"
    out_parent.mkdir()
    result = run_cli("gptq", model, "--calib", calib_file, "-o", out_parent / "q")
    assert_one_error(result, "down_proj is 320×1000", out_parent)
