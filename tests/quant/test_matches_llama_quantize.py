"""qconvert's quantized GGUF files against the bundled llama-quantize, byte for byte: same tensor
names, same per-tensor types, same data, for every file type, on the trained fixture and on a
random-weight Llama whose row lengths (384, and 1000 for ffn_down) force the fallbacks."""

import subprocess

import pytest
from qconvert.llama_cpp import find_tool
from qconvert.quant.file_types import FileType
from tests.conftest import FIXTURE, convert, run_cli
from tests.quant.gguf_compare import differences, metadata_differences

ALL_TYPES = list(FileType)


def llama_quantize(src, dst, file_type: FileType) -> None:
    proc = subprocess.run([str(find_tool("llama-quantize")), str(src), str(dst), file_type.value.upper(), "2"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("file_type", ALL_TYPES, ids=[t.value for t in ALL_TYPES])
@pytest.mark.parametrize("model", ["fixture", "odd-llama"])
def test_quantize_matches_llama_quantize(llama_tools, fixture_f16, odd_llama_f16, tmp_path, model, file_type):
    src = fixture_f16 if model == "fixture" else odd_llama_f16
    reference, ours = tmp_path / "reference.gguf", tmp_path / "ours.gguf"
    llama_quantize(src, reference, file_type)
    result = run_cli("quantize", src, ours, file_type.value, "--threads", 2)
    assert result.rc == 0, result.stderr
    assert differences(ours, reference) == []
    assert metadata_differences(ours, reference) == []


@pytest.mark.parametrize("file_type", ALL_TYPES, ids=[t.value for t in ALL_TYPES])
def test_one_step_from_hf_matches_two_step_llama_cpp(llama_tools, fixture_f16, tmp_path, file_type):
    """An fp16 checkpoint straight to a quantized GGUF equals f16 GGUF + llama-quantize."""
    reference, ours = tmp_path / "reference.gguf", tmp_path / "ours.gguf"
    llama_quantize(fixture_f16, reference, file_type)
    result = run_cli("gguf", FIXTURE, "--type", file_type.value, "-o", ours)
    assert result.rc == 0, result.stderr
    assert differences(ours, reference) == []


@pytest.mark.parametrize("file_type", [FileType.Q8_0, FileType.Q4_K_M], ids=lambda t: t.value)
def test_bf16_gguf_input_matches_llama_quantize(llama_tools, tmp_path, file_type):
    src = convert(FIXTURE, tmp_path / "bf16.gguf", FileType.BF16)
    reference, ours = tmp_path / "reference.gguf", tmp_path / "ours.gguf"
    llama_quantize(src, reference, file_type)
    assert run_cli("quantize", src, ours, file_type.value).rc == 0
    assert differences(ours, reference) == []
