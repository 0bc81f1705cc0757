"""AWQ checkpoints of the fixture, made once per session through the CLI as a user would."""

from pathlib import Path

import pytest

from tests.conftest import FIXTURE, run_cli


def awq_cli(out: Path, *args: object, model: Path = FIXTURE) -> Path:
    result = run_cli("awq", model, "-o", out, *args)
    assert result.rc == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def awq_dirs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("awq")


@pytest.fixture(scope="session")
def awq_4bit(awq_dirs, calib_file) -> Path:
    """AutoAWQ's defaults: 4 bits, group size 128, zero point, clipping; GEMM packed."""
    return awq_cli(awq_dirs / "w4g128", "--calib", calib_file)
