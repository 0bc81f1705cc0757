"""Importance-weighted quantization against the bundled llama-quantize --imatrix, byte for byte:
with the same imatrix file (made by the bundled llama-imatrix from the f16 GGUF), the same tensor
names, types, data and metadata, for every file type, on the trained fixture and on the random
Llama whose row lengths force the fallbacks; from an f16 GGUF (`quantize --imatrix`) and from the
HF checkpoint in one step (`gguf --imatrix`); and the in-line route (`gguf --calib`) equal to
computing the matrix first."""

import pytest

from qconvert.llama_cpp import run_tool
from qconvert.quant.file_types import FILE_TYPES, FileType
from tests.conftest import EVAL_TEXT, FIXTURE, run_cli
from tests.quant.gguf_compare import differences, metadata_differences

QUANTIZED = [t for t in FileType if FILE_TYPES[t].quantized]


def llama_imatrix(f16, out):
    run_tool("llama-imatrix", ["-m", str(f16), "-f", str(EVAL_TEXT), "-o", str(out), "-c", "128", "-b", "128", "--chunks", "8", "-t", "2", "--no-ppl"])
    return out


def llama_quantize(src, dst, file_type: FileType, imatrix) -> None:
    run_tool("llama-quantize", ["--imatrix", str(imatrix), str(src), str(dst), file_type.value.upper(), "2"])


@pytest.fixture(scope="module")
def imatrices(llama_tools, fixture_f16, odd_llama_f16, tmp_path_factory):
    d = tmp_path_factory.mktemp("imatrices")
    return {"fixture": llama_imatrix(fixture_f16, d / "fixture.gguf"), "odd-llama": llama_imatrix(odd_llama_f16, d / "odd.gguf")}


@pytest.mark.parametrize("file_type", QUANTIZED, ids=[t.value for t in QUANTIZED])
@pytest.mark.parametrize("model", ["fixture", "odd-llama"])
def test_quantize_with_imatrix_matches_llama_quantize(imatrices, fixture_f16, odd_llama_f16, tmp_path, model, file_type):
    src = fixture_f16 if model == "fixture" else odd_llama_f16
    reference, ours = tmp_path / "reference.gguf", tmp_path / "ours.gguf"
    llama_quantize(src, reference, file_type, imatrices[model])
    result = run_cli("quantize", src, ours, file_type.value, "--imatrix", imatrices[model], "--threads", 2)
    assert result.rc == 0, result.stderr
    assert differences(ours, reference) == []
    assert metadata_differences(ours, reference) == []


@pytest.mark.parametrize("file_type", [FileType.Q2_K, FileType.Q4_0, FileType.Q4_K_M], ids=lambda t: t.value)
def test_one_step_from_hf_with_imatrix(imatrices, fixture_f16, tmp_path, file_type):
    reference, ours = tmp_path / "reference.gguf", tmp_path / "ours.gguf"
    llama_quantize(fixture_f16, reference, file_type, imatrices["fixture"])
    result = run_cli("gguf", FIXTURE, "--type", file_type.value, "--imatrix", imatrices["fixture"], "-o", ours)
    assert result.rc == 0, result.stderr
    assert differences(ours, reference) == []


def test_in_line_imatrix_equals_the_two_steps(calib_file, fixture_f16, tmp_path, llama_tools):
    one_step, kept = tmp_path / "one.gguf", tmp_path / "kept.gguf"
    result = run_cli("gguf", FIXTURE, "--type", "q4_k_m", "--calib", calib_file, "--imatrix-out", kept, "-o", one_step)
    assert result.rc == 0, result.stderr
    separate, two_step = tmp_path / "separate.gguf", tmp_path / "two.gguf"
    assert run_cli("imatrix", FIXTURE, "--calib", calib_file, "-o", separate).rc == 0
    assert run_cli("quantize", fixture_f16, two_step, "q4_k_m", "--imatrix", separate).rc == 0
    assert differences(one_step, two_step) == []
    assert kept.read_bytes() == separate.read_bytes()
