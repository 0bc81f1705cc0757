"""`qconvert gguf --gptq` against the bundled llama.cpp.

Exactness: with the Hessian made the identity (nothing to compensate), the whole file — every
tensor's bytes and the metadata — is what llama-quantize --imatrix writes from the f16 GGUF with the
importance matrix the run used (`--imatrix-out`), for every file type, on the trained fixture and
on a random Llama whose odd widths force the fallbacks and whose Q/K rows llama.cpp reorders, and
on random Qwen2-MoE and Qwen3-MoE models (an expert no token reached included); and
with uniform weights the solve gives llama-quantize's bytes without an imatrix, tensor by tensor.

The real run: the same tensor names, types and sizes as llama-quantize --imatrix with the same
matrix, the tensors outside the decoder layers byte-identical, and the rounding measurably closer
to the f16 model (KL divergence by llama-perplexity). Bad input: one error line, exit code 2.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGUFReader

from qconvert.blockq import run as blockq_run
from qconvert.blockq.solve import BlockGPTQConfig, hessian_factor, quantize_blocks
from qconvert.calib.types import CalibInput
from qconvert.convert.hf_to_gguf import ConvertOptions, convert_hf_to_gguf
from qconvert.gptq.hessian import Hessian
from qconvert.imatrix.file import read_imatrix
from qconvert.layerwise.experts import UnfusedExperts
from qconvert.llama_cpp import run_tool
from qconvert.quant import kernels
from qconvert.quant.file_types import FILE_TYPES, FileType
from tests.arch_models import make_random_moe
from tests.conftest import EVAL_TEXT, FIXTURE, PPL_CHUNKS, assert_one_error, convert, interrupt_cli, ppl_json, run_cli
from tests.quant.gguf_compare import differences, metadata_differences, tensor_table

QUANTIZED = [t for t in FileType if FILE_TYPES[t].quantized]


@pytest.fixture
def identity_hessian(monkeypatch):
    """Nothing to compensate: the identity Hessian, and each linear fitted to its own weights' outputs
    (the asymmetric target, which compensates the rounding upstream, left out)."""
    monkeypatch.setattr(Hessian, "matrix", lambda self: torch.eye(self.upper.shape[0]))
    monkeypatch.setattr(blockq_run, "asymmetric_shift", lambda cross, *args: torch.zeros_like(cross))


def gptq_gguf(model: Path, out: Path, file_type: FileType, calib: Path, imatrix_out: Path | None = None) -> Path:
    options = ConvertOptions(file_type=file_type, calib=CalibInput(file=calib), gptq=True, imatrix_out=imatrix_out, progress=False, compute_dtype="float32", threads=2)
    return convert_hf_to_gguf(model, out, options)


def llama_quantize(src: Path, dst: Path, file_type: FileType, imatrix: Path | None = None) -> Path:
    run_tool("llama-quantize", [*(["--imatrix", str(imatrix)] if imatrix else []), str(src), str(dst), file_type.value.upper(), "2"])
    return dst


@pytest.mark.parametrize("file_type", QUANTIZED, ids=[t.value for t in QUANTIZED])
def test_identity_hessian_gives_llama_quantizes_file(identity_hessian, llama_tools, fixture_f16, small_calib, tmp_path, file_type):
    ours, imatrix = gptq_gguf(FIXTURE, tmp_path / "ours.gguf", file_type, small_calib, tmp_path / "imatrix.gguf"), tmp_path / "imatrix.gguf"
    reference = llama_quantize(fixture_f16, tmp_path / "reference.gguf", file_type, imatrix)
    assert differences(ours, reference) == []
    assert metadata_differences(ours, reference) == []


def test_identity_hessian_on_a_llama_with_odd_widths(identity_hessian, llama_tools, odd_llama_f16, small_calib, tmp_path):
    """q3_k_m: Q3_K, Q4_K, Q5_K and Q6_K where they apply, their legacy fallbacks on the 384-wide
    rows, F16 for ffn_down (rows of 1000), tied embeddings, Q/K rows in llama.cpp's RoPE order."""
    file_type = FileType.Q3_K_M
    ours = gptq_gguf(odd_llama_f16.parent / "hf", tmp_path / "ours.gguf", file_type, small_calib, tmp_path / "imatrix.gguf")
    reference = llama_quantize(odd_llama_f16, tmp_path / "reference.gguf", file_type, tmp_path / "imatrix.gguf")
    assert differences(ours, reference) == []
    assert metadata_differences(ours, reference) == []


def test_a_given_importance_matrix_steers_the_block_fits(identity_hessian, llama_tools, fixture_f16, small_calib, tmp_path):
    """--imatrix FILE with --gptq: the fits use llama-imatrix's matrix, and with nothing to compensate
    the file is llama-quantize --imatrix's with that matrix."""
    imatrix = tmp_path / "llama-imatrix.gguf"
    run_tool("llama-imatrix", ["-m", str(fixture_f16), "-f", str(EVAL_TEXT), "-o", str(imatrix), "-c", "128", "-b", "128", "--chunks", "8", "-t", "2", "--no-ppl"])
    options = ConvertOptions(file_type=FileType.Q4_K_M, calib=CalibInput(file=small_calib), imatrix=imatrix, gptq=True, progress=False, compute_dtype="float32", threads=2)
    convert_hf_to_gguf(FIXTURE, tmp_path / "ours.gguf", options)
    reference = llama_quantize(fixture_f16, tmp_path / "reference.gguf", FileType.Q4_K_M, imatrix)
    assert differences(tmp_path / "ours.gguf", reference) == []
    assert metadata_differences(tmp_path / "ours.gguf", reference) == []


@pytest.mark.parametrize("file_type", QUANTIZED, ids=[t.value for t in QUANTIZED])
def test_uniform_weights_give_llama_quantizes_tensors(llama_tools, fixture_f16, tmp_path, file_type):
    reference = tensor_table(llama_quantize(fixture_f16, tmp_path / "reference.gguf", file_type))
    source = tensor_table(fixture_f16)
    solved = 0
    for name, t in reference.items():
        if t.tensor_type not in kernels.BLOCK_TYPES:
            continue
        weight = torch.from_numpy(np.asarray(source[name].data, dtype=np.float32).reshape(-1, int(source[name].shape[0])))
        ours = quantize_blocks(weight, hessian_factor(torch.eye(weight.shape[1]), 0.01, name), t.tensor_type, None, BlockGPTQConfig())
        assert ours.tobytes() == t.data.tobytes(), name
        solved += 1
    assert solved >= 28  # every linear of the 4 layers, and the embeddings


@pytest.fixture(scope="module")
def q4_k_m_pair(llama_tools, fixture_f16, calib_file, tmp_path_factory):
    """The real run at q4_k_m, and llama-quantize --imatrix with the importance matrix it used."""
    d = tmp_path_factory.mktemp("gptq-q4_k_m")
    ours = gptq_gguf(FIXTURE, d / "ours.gguf", FileType.Q4_K_M, calib_file, d / "imatrix.gguf")
    return ours, llama_quantize(fixture_f16, d / "reference.gguf", FileType.Q4_K_M, d / "imatrix.gguf")


def test_the_file_has_llama_quantizes_tensors_only_rounded_otherwise(q4_k_m_pair):
    ours, reference = q4_k_m_pair
    a, b = GGUFReader(ours), GGUFReader(reference)
    assert sorted((t.name, t.tensor_type, list(t.shape), t.n_bytes) for t in a.tensors) == sorted((t.name, t.tensor_type, list(t.shape), t.n_bytes) for t in b.tensors)
    assert metadata_differences(ours, reference) == []
    rounded = {t.name for t in a.tensors if t.name.startswith("blk.") and t.tensor_type in kernels.BLOCK_TYPES}
    assert len(rounded) == 28
    problems = differences(ours, reference)
    assert {p.split(" ")[0] for p in problems} == rounded  # every decoder-layer weight rounded anew, nothing else changed


def test_legacy_typed_embeddings_get_the_searched_fit(identity_hessian, llama_tools, fixture_f16, small_calib, q4_k_m_pair, tmp_path):
    """A Q4_0 token_embd is fitted with unit importance (each block's scale searched for the least
    squared error) where llama-quantize uses its max/-8 rule; the entry is in the run's matrix, so
    llama-quantize --imatrix with it writes the same bytes. A k-quant token_embd keeps llama.cpp's rule."""
    ours = gptq_gguf(FIXTURE, tmp_path / "ours.gguf", FileType.Q4_0, small_calib, tmp_path / "imatrix.gguf")
    entry = read_imatrix(tmp_path / "imatrix.gguf").entries["token_embd.weight"]
    assert (entry.in_sum2 == 1).all() and (entry.counts == 1).all()
    assert differences(ours, llama_quantize(fixture_f16, tmp_path / "with-matrix.gguf", FileType.Q4_0, tmp_path / "imatrix.gguf")) == []
    plain = llama_quantize(fixture_f16, tmp_path / "plain.gguf", FileType.Q4_0)
    original = np.asarray(tensor_table(fixture_f16)["token_embd.weight"].data, dtype=np.float32)
    error = {}
    for name, path in (("ours", ours), ("llama-quantize", plain)):
        t = tensor_table(path)["token_embd.weight"]
        error[name] = float(((kernels.dequantize(np.asarray(t.data), t.tensor_type, original.shape[1]) - original) ** 2).sum())
    assert error["ours"] < 0.97 * error["llama-quantize"], error
    assert "token_embd.weight" not in read_imatrix(q4_k_m_pair[0].parent / "imatrix.gguf").entries


TINY_LLAMA = FIXTURE.parent / "tiny-llama"


@pytest.fixture(scope="module")
def trained(fixture_f16, calib_file, tmp_path_factory) -> dict[str, tuple[Path, Path, Path]]:
    """The two trained fixtures: model folder, f16 GGUF, a calibration file of its tokenizer."""
    d = tmp_path_factory.mktemp("tiny-llama")
    llama_calib = d / "calib.safetensors"
    assert run_cli("calib", TINY_LLAMA, "-o", llama_calib, "--n-samples", "64", "--seqlen", "256").rc == 0
    return {"tiny-qwen2": (FIXTURE, fixture_f16, calib_file), "tiny-llama": (TINY_LLAMA, convert(TINY_LLAMA, d / "f16.gguf"), llama_calib)}


@pytest.mark.parametrize(("model", "file_type", "most"), [
    ("tiny-qwen2", FileType.Q4_0, 0.8), ("tiny-qwen2", FileType.Q3_K_M, 0.8), ("tiny-qwen2", FileType.Q4_K_M, 0.8),
    ("tiny-llama", FileType.Q4_0, 0.6), ("tiny-llama", FileType.Q4_K_M, 0.8),
], ids=lambda v: v.value if isinstance(v, FileType) else str(v))
def test_error_compensation_brings_the_file_closer_to_f16(llama_tools, trained, tmp_path, model, file_type, most):
    """Against llama-quantize with the same importance matrix: only the rounding differs. Measured
    here: tiny-qwen2 0.74, 0.65, 0.71 of its mean KL divergence (the bound was 0.93 before the
    asymmetric target compensated the embeddings' rounding in the layers). Against llama-imatrix's matrix see `make bench-blockq`;
    tiny-llama has Q/K rows in llama.cpp's RoPE order and most rows on Q5_0."""
    model_dir, f16, calib = trained[model]
    ours = gptq_gguf(model_dir, tmp_path / "ours.gguf", file_type, calib, tmp_path / "imatrix.gguf")
    reference = llama_quantize(f16, tmp_path / "reference.gguf", file_type, tmp_path / "imatrix.gguf")
    kld = {}
    for name, path in (("ours", ours), ("reference", reference)):
        kld[name] = ppl_json(path, "--text", EVAL_TEXT, "--ctx", 256, "--chunks", PPL_CHUNKS, "--kld-base", f16)["kld_mean"]
    assert kld["ours"] < most * kld["reference"], kld


def test_gptq_needs_a_calibration_set(tmp_path):
    result = run_cli("gguf", FIXTURE, "--type", "q4_k_m", "--gptq", "-o", tmp_path / "out.gguf")
    assert_one_error(result, "--gptq needs a calibration set", tmp_path)


def test_awq_scale_needs_a_calibration_set(tmp_path):
    result = run_cli("gguf", FIXTURE, "--type", "q4_k_m", "--awq-scale", "-o", tmp_path / "out.gguf")
    assert_one_error(result, "--awq-scale needs a calibration set", tmp_path)


def test_an_imatrix_file_does_not_fit_a_scaled_model(calib_file, tmp_path):
    result = run_cli("gguf", FIXTURE, "--type", "q4_k_m", "--gptq", "--awq-scale", "--calib", calib_file, "--imatrix", calib_file, "-o", tmp_path / "out.gguf")
    assert_one_error(result, "--awq-scale changes the model", tmp_path)


def test_gptq_needs_a_quantized_type(calib_file, tmp_path):
    result = run_cli("gguf", FIXTURE, "--type", "f16", "--gptq", "--calib", calib_file, "-o", tmp_path / "out.gguf")
    assert_one_error(result, "GPTQ rounding only steers quantization", tmp_path)


@pytest.fixture(scope="module", params=["qwen2moe", "qwen3moe"])
def moe(request, tmp_path_factory) -> tuple[Path, Path]:
    """A random MoE checkpoint (4 experts, top 2; Qwen2-MoE with its shared expert) and its f16 GGUF."""
    d = tmp_path_factory.mktemp(request.param)
    model = make_random_moe(request.param, d / "hf")
    return model, convert(model, d / "f16.gguf")


@pytest.mark.parametrize("routing", ["every expert", "expert 3 unreached"])
def test_identity_hessian_on_moe_models(identity_hessian, llama_tools, moe, small_calib, tmp_path, monkeypatch, routing):
    """Each routed expert solved on its own tokens and stacked as llama.cpp's ffn_*_exps tensors, with
    its own row of the importance matrix; an expert no token reached gets llama-quantize's uniform
    importance for a matrix its imatrix counted nothing for."""
    if routing != "every expert":
        forward = UnfusedExperts.forward
        monkeypatch.setattr(UnfusedExperts, "forward", lambda self, h, index, weights: forward(self, h, index.masked_fill(index == 3, len(self)), weights))
    model, f16 = moe
    ours = gptq_gguf(model, tmp_path / "ours.gguf", FileType.Q4_K_M, small_calib, tmp_path / "imatrix.gguf")
    counts = read_imatrix(tmp_path / "imatrix.gguf").entries["blk.0.ffn_down_exps.weight"].counts
    assert (counts[3] == 0) == (routing != "every expert") and counts[:3].all()
    reference = llama_quantize(f16, tmp_path / "reference.gguf", FileType.Q4_K_M, tmp_path / "imatrix.gguf")
    assert differences(ours, reference) == []
    assert metadata_differences(ours, reference) == []


def test_an_existing_output_is_kept(calib_file, tmp_path):
    out = tmp_path / "out.gguf"
    out.write_bytes(b"keep me")
    result = run_cli("gguf", FIXTURE, "--type", "q4_k_m", "--gptq", "--calib", calib_file, "-o", out)
    assert result.rc == 2 and len(result.stderr.strip().splitlines()) == 1 and "exists" in result.stderr, result.stderr
    assert out.read_bytes() == b"keep me" and list(tmp_path.iterdir()) == [out]


def test_ctrl_c_leaves_nothing(calib_file, tmp_path):
    """Interrupted in the layer loop (its work folder appears before the first layer): no output, no
    work folder, no spool."""
    out = tmp_path / "out"
    out.mkdir()
    rc, stderr = interrupt_cli("gguf", FIXTURE, "--type", "q4_k_m", "--gptq", "--calib", calib_file, "-o", out / "q.gguf", ready=lambda: any(out.iterdir()), settle=2.0)
    assert rc == 130, stderr
    assert "interrupted" in stderr
    assert list(out.iterdir()) == []
