"""qconvert's quantized GGUF files against the bundled llama-quantize, byte for byte: same tensor
names, same per-tensor types, same data, for every file type and every instruction-set path
(QCONVERT_ISA), on the trained fixture, on a random-weight Llama whose row lengths (384, and 1000
for ffn_down) force the fallbacks, and on a random model of SmolLM2-135M's shapes (2 layers),
where most tensors fall back to the legacy types."""

import subprocess
from pathlib import Path

import pytest
from qconvert.llama_cpp import find_tool
from qconvert.quant.file_types import FileType
from tests.conftest import FIXTURE, convert, run_cli
from tests.native.isa import ALL_ISAS, require_isa
from tests.quant.gguf_compare import differences, metadata_differences
from tests.quant.random_models import SMOLLM2, make_llama

ALL_TYPES = list(FileType)


def llama_quantize(src, dst, file_type: FileType) -> None:
    proc = subprocess.run([str(find_tool("llama-quantize")), str(src), str(dst), file_type.value.upper(), "2"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.fixture(scope="module")
def smollm2_f16(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("smollm2-shaped")
    return convert(make_llama(d / "hf", SMOLLM2.with_layers(2)), d / "smollm2-f16.gguf")


@pytest.fixture(scope="module")
def reference(llama_tools, tmp_path_factory):
    """llama-quantize's file for (source, file type), made once for every ISA's comparison."""
    made: dict[tuple[Path, FileType], Path] = {}
    d = tmp_path_factory.mktemp("llama-quantize")

    def get(src: Path, file_type: FileType) -> Path:
        if (src, file_type) not in made:
            made[src, file_type] = d / f"{src.stem}-{file_type.value}.gguf"
            llama_quantize(src, made[src, file_type], file_type)
        return made[src, file_type]

    return get


# Every type on every model with the path chosen at start-up; every path on the SmolLM2-shaped model
# for the legacy types (hand-written SIMD kernels, where real models spend their time) and one
# k-quant mix (the generic C compiled per ISA). tests/native checks every kernel on every path.
PATH_TYPES = [FileType.Q4_0, FileType.Q4_1, FileType.Q5_0, FileType.Q5_1, FileType.Q8_0, FileType.Q4_K_M]
CASES = [(model, None, t) for model in ("fixture", "odd-llama", "smollm2-shaped") for t in ALL_TYPES]
CASES += [("smollm2-shaped", isa, t) for isa in ALL_ISAS for t in PATH_TYPES]


@pytest.mark.parametrize("model, isa, file_type", CASES, ids=[f"{m}-{i}-{t.value}" if i else f"{m}-{t.value}" for m, i, t in CASES])
def test_quantize_matches_llama_quantize(request, reference, tmp_path, monkeypatch, model, isa, file_type):
    src = request.getfixturevalue({"fixture": "fixture_f16", "odd-llama": "odd_llama_f16", "smollm2-shaped": "smollm2_f16"}[model])
    if isa:
        require_isa(isa)
        monkeypatch.setenv("QCONVERT_ISA", isa)  # the CLI's process takes this path
    ours = tmp_path / "ours.gguf"
    result = run_cli("quantize", src, ours, file_type.value, "--threads", 2)
    assert result.rc == 0, result.stderr
    assert differences(ours, reference(src, file_type)) == []
    assert metadata_differences(ours, reference(src, file_type)) == []


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
