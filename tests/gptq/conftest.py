"""GPTQ checkpoints of the fixture, made once per session through the CLI as a user would."""

from pathlib import Path

import pytest

from tests.conftest import FIXTURE, run_cli

# The bundled calibration set, cut smaller than the defaults (128 × 512) to keep the suite fast.
CALIB_ARGS = ("--n-samples", "64", "--seqlen", "256")


def gptq_cli(out: Path, *args: object, model: Path = FIXTURE) -> Path:
    result = run_cli("gptq", model, "-o", out, *args)
    assert result.rc == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def calib_file(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("calib") / "calib.safetensors"
    result = run_cli("calib", FIXTURE, "-o", out, *CALIB_ARGS)
    assert result.rc == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def gptq_dirs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gptq")


@pytest.fixture(scope="session")
def gptq_4bit(gptq_dirs, calib_file) -> Path:
    return gptq_cli(gptq_dirs / "w4g128", "--calib", calib_file, "--bits", "4", "--group-size", "128")


@pytest.fixture(scope="session")
def gptq_3bit(gptq_dirs, calib_file) -> Path:
    return gptq_cli(gptq_dirs / "w3g128", "--calib", calib_file, "--bits", "3", "--group-size", "128")
