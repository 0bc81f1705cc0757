"""GPTQ checkpoints of the fixture, made once per session through the CLI as a user would."""

from pathlib import Path

import pytest

from tests.conftest import FIXTURE, run_cli


def gptq_cli(out: Path, *args: object, model: Path = FIXTURE) -> Path:
    result = run_cli("gptq", model, "-o", out, *args)
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
