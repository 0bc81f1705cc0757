"""Finding the llama.cpp tools: the cache, a user's build, and a clear error when missing."""

import pytest

from qconvert.errors import QConvertError
from qconvert.llama_cpp import ENV_VAR, find_tool


def test_missing_tool_error_says_how_to_build_it(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with pytest.raises(QConvertError, match="make llama-cpp"):
        find_tool("llama-perplexity")


def test_user_build_folder_and_its_bin_are_found(monkeypatch, tmp_path):
    tool = tmp_path / "bin" / "llama-quantize"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert find_tool("llama-quantize") == tool
