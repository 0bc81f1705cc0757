"""imatrix files against the real llama.cpp: llama-imatrix writes them (GGUF and legacy .dat from
the same run settings), we read both alike, write GGUF that llama-quantize uses exactly as its
own, compute in importance() what llama-quantize hands its quantizer, and refuse bad files."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter

from qconvert.errors import QConvertError
from qconvert.imatrix.file import ImatrixEntry, ImportanceMatrix, read_imatrix, write_imatrix
from qconvert.llama_cpp import run_tool
from tests.conftest import EVAL_TEXT
from tests.quant.gguf_compare import differences, metadata_differences

CHUNKS, CHUNK_SIZE = 4, 128
# -b = -c: one chunk per batch (n_parallel 1), so chunk_size = the context; --no-ppl skips scoring
IMATRIX_ARGS = ["-f", str(EVAL_TEXT), "-c", str(CHUNK_SIZE), "-b", str(CHUNK_SIZE), "--chunks", str(CHUNKS), "-t", "1", "--no-ppl"]
N_ENTRIES = 4 * 7  # the fixture's 4 blocks × q, k, v, output, gate, up, down (output.weight is not collected)


@pytest.fixture(scope="session")
def theirs(llama_tools, fixture_f16, tmp_path_factory) -> dict[str, Path]:
    """llama-imatrix's files for the f16 fixture, one per --output-format, else identical runs."""
    folder = tmp_path_factory.mktemp("imatrix")
    files = {fmt: folder / f"theirs.{fmt}" for fmt in ("gguf", "dat")}
    for fmt, path in files.items():
        run_tool("llama-imatrix", ["-m", str(fixture_f16), "-o", str(path), "--output-format", fmt, *IMATRIX_ARGS])
    return files


def quantize(fixture_f16: Path, imatrix: Path) -> Path:
    out = imatrix.with_name(f"q4_k_m-with-{imatrix.name}.gguf")
    run_tool("llama-quantize", ["--imatrix", str(imatrix), str(fixture_f16), str(out), "q4_k_m", "1"])
    return out


@pytest.fixture(scope="session")
def quantized_with_theirs(theirs, fixture_f16) -> Path:
    return quantize(fixture_f16, theirs["gguf"])


def assert_same_matrix(a: ImportanceMatrix, b: ImportanceMatrix) -> None:
    """Equal bit for bit: names in order, metadata, and every array with its dtype and shape."""
    assert (a.datasets, a.chunk_count, a.chunk_size) == (b.datasets, b.chunk_count, b.chunk_size)
    assert list(a.entries) == list(b.entries)
    for name, entry in a.entries.items():
        for field in ("in_sum2", "counts"):
            x, y = getattr(entry, field), getattr(b.entries[name], field)
            assert x.dtype == y.dtype == np.float32 and x.shape == y.shape and x.tobytes() == y.tobytes(), (name, field)


def edited(matrix: ImportanceMatrix, changes: dict[str, ImatrixEntry]) -> ImportanceMatrix:
    return dataclasses.replace(matrix, entries={**matrix.entries, **changes})


# --- both formats ---------------------------------------------------------------------------


def test_both_formats_read_alike(theirs):
    from_gguf, from_dat = read_imatrix(theirs["gguf"]), read_imatrix(theirs["dat"])
    assert list(from_gguf.entries) == list(from_dat.entries) and len(from_gguf.entries) == N_ENTRIES
    assert from_gguf.datasets == from_dat.datasets == [str(EVAL_TEXT)]
    assert from_gguf.chunk_count == from_dat.chunk_count == CHUNKS
    assert (from_gguf.chunk_size, from_dat.chunk_size) == (CHUNK_SIZE, 0)  # a .dat does not record it
    assert from_gguf.importance("output.weight") is None and from_dat.importance("output.weight") is None
    for name, entry in from_gguf.entries.items():
        legacy = from_dat.entries[name]
        n_in = 768 if "ffn_down" in name else 256
        assert entry.in_sum2.shape == legacy.in_sum2.shape == (1, n_in)
        # The GGUF counts tokens; the .dat keeps only ncall, the chunks, and scales its sums to match.
        assert entry.counts.tolist() == [CHUNKS * CHUNK_SIZE] and legacy.counts.tolist() == [CHUNKS]
        importance = from_gguf.importance(name)
        np.testing.assert_array_equal(importance, entry.in_sum2[0] / np.float32(CHUNKS * CHUNK_SIZE))
        # Equal bit for bit, not just within rounding: the .dat holds fl(fl(sum / count) * ncall),
        # quantize divides it by ncall, and with count = ncall * chunk_size (a dense weight counts
        # every token of every chunk) that division gives back fl(sum / count) exactly. Counts off
        # that grid (MoE experts) could make the two differ in the last bit.
        np.testing.assert_array_equal(from_dat.importance(name), importance)


def test_the_format_is_told_by_content_not_name(theirs, tmp_path):
    for fmt, other in (("gguf", "dat"), ("dat", "gguf")):
        misnamed = tmp_path / f"imatrix.{other}"
        misnamed.write_bytes(theirs[fmt].read_bytes())
        assert_same_matrix(read_imatrix(misnamed), read_imatrix(theirs[fmt]))


def test_a_dat_without_its_trailer_reads(theirs, tmp_path):
    """Old .dat files end after the entries; the chunk count and dataset name are optional."""
    data = theirs["dat"].read_bytes()
    trailer = 4 + 4 + len(str(EVAL_TEXT).encode())
    short = tmp_path / "old.dat"
    short.write_bytes(data[:-trailer])
    old, full = read_imatrix(short), read_imatrix(theirs["dat"])
    assert (old.datasets, old.chunk_count) == ([], 0)
    assert_same_matrix(old, dataclasses.replace(full, datasets=[], chunk_count=0))


# --- writing --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["gguf", "dat"])
def test_write_then_read_is_lossless(theirs, tmp_path, fmt):
    matrix = read_imatrix(theirs[fmt])
    ours = write_imatrix(tmp_path / "ours.gguf", matrix)
    assert ours == tmp_path / "ours.gguf"
    assert_same_matrix(read_imatrix(ours), matrix)
    if fmt == "gguf":  # same keys, order, shapes and padding as llama-imatrix: the very same bytes
        assert ours.read_bytes() == theirs["gguf"].read_bytes()


def test_expert_matrices_round_trip(tmp_path):
    """n_mat > 1 (MoE experts), a zero and a fractional count, and no dataset name."""
    rng = np.random.default_rng(0)
    matrix = ImportanceMatrix(
        {
            "blk.0.ffn_down_exps.weight": ImatrixEntry(rng.random((3, 64), dtype=np.float32), np.array([5, 0, 2.5], np.float32)),
            "blk.0.attn_q.weight": ImatrixEntry(rng.random((1, 32), dtype=np.float32), np.array([7], np.float32)),
        },
        datasets=[],
        chunk_count=2,
        chunk_size=16,
    )
    back = read_imatrix(write_imatrix(tmp_path / "moe.gguf", matrix))
    assert_same_matrix(back, dataclasses.replace(matrix, entries=dict(sorted(matrix.entries.items()))))
    importance = back.importance("blk.0.ffn_down_exps.weight").reshape(3, 64)
    np.testing.assert_array_equal(importance[0], matrix.entries["blk.0.ffn_down_exps.weight"].in_sum2[0] / np.float32(5))
    assert (importance[1] == 1).all()  # no tokens: every column counts 1
    np.testing.assert_array_equal(importance[2], matrix.entries["blk.0.ffn_down_exps.weight"].in_sum2[2] / np.float32(3))  # lround(2.5)


# --- llama-quantize -------------------------------------------------------------------------


def test_llama_quantize_uses_ours_as_theirs(theirs, fixture_f16, tmp_path, quantized_with_theirs):
    """Our GGUF, written from theirs or from their .dat, quantizes to the same tensors as theirs."""
    for fmt in ("gguf", "dat"):
        ours = write_imatrix(tmp_path / f"ours-from-{fmt}.gguf", read_imatrix(theirs[fmt]))
        assert differences(quantize(fixture_f16, ours), quantized_with_theirs) == [], fmt
        assert differences(quantize(fixture_f16, theirs[fmt]), quantized_with_theirs) == [], fmt
    # Only the imatrix's file name, recorded in the output, tells the runs apart.
    assert metadata_differences(quantize(fixture_f16, ours), quantized_with_theirs, ignore={"quantize.imatrix.file"}) == []


def test_importance_is_what_llama_quantize_uses(theirs, fixture_f16, tmp_path, quantized_with_theirs):
    """An imatrix whose sums are importance() and whose counts are 1 quantizes like the original,
    including counts quantize treats specially: 0 (every column weighs 1) and fractions (lround)."""
    matrix = read_imatrix(theirs["gguf"])
    q, down = "blk.0.attn_q.weight", "blk.1.ffn_down.weight"
    counts = {q: 0.0, down: CHUNKS * CHUNK_SIZE - 1.5}  # lround → 511; round-half-even would give 510
    tricky = edited(matrix, {name: ImatrixEntry(matrix.entries[name].in_sum2, [count]) for name, count in counts.items()})
    assert (tricky.importance(q) == 1).all()
    np.testing.assert_array_equal(tricky.importance(down), matrix.entries[down].in_sum2[0] / np.float32(511))

    def probe_of(m: ImportanceMatrix) -> ImportanceMatrix:
        return edited(m, {name: ImatrixEntry(m.importance(name)[None], [1]) for name in m.entries})

    quantized = {
        label: quantize(fixture_f16, write_imatrix(tmp_path / f"{label}.gguf", m))
        for label, m in {"probe": probe_of(matrix), "tricky": tricky, "tricky-probe": probe_of(tricky)}.items()
    }
    assert differences(quantized["probe"], quantized_with_theirs) == []
    assert differences(quantized["tricky-probe"], quantized["tricky"]) == []
    # The edits change what quantize writes, so the two checks above would catch a wrong rule.
    changed = differences(quantized["tricky"], quantized_with_theirs)
    assert {line.split(" ")[0] for line in changed} == {q, down}


# --- bad files ------------------------------------------------------------------------------


def error_of(path: Path) -> str:
    with pytest.raises(QConvertError) as info:
        read_imatrix(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message, message
    return message


@pytest.mark.parametrize(
    "fmt, keep",
    [("gguf", 10), ("gguf", 200), ("gguf", 0.5), ("gguf", -1), ("dat", 10), ("dat", 0.5), ("dat", -1)],
    ids=["gguf-magic", "gguf-header", "gguf-half", "gguf-last-byte", "dat-first-entry", "dat-half", "dat-last-byte"],
)
def test_truncated_files_are_refused(theirs, tmp_path, fmt, keep):
    data = theirs[fmt].read_bytes()
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    assert "truncated" in error_of(cut)


def test_a_model_gguf_is_not_an_imatrix(fixture_f16):
    assert "not an imatrix but a GGUF of general.type 'model'" in error_of(fixture_f16)


def test_random_bytes_are_not_an_imatrix(tmp_path):
    path = tmp_path / "random.gguf"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    assert "not an imatrix" in error_of(path)


def _hand_made_gguf(path: Path, tensors: dict[str, np.ndarray], metadata: bool = True) -> Path:
    writer = GGUFWriter(path, arch="")
    writer.add_type("imatrix")
    if metadata:
        writer.add_array("imatrix.datasets", ["text.txt"])
        writer.add_uint32("imatrix.chunk_count", 1)
        writer.add_uint32("imatrix.chunk_size", 128)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize(
    "tensors, metadata, expected",
    [
        ({"w.in_sum2": np.ones(10, np.float32), "w.counts": np.ones((3, 1), np.float32)}, True, "inconsistent shapes for w"),
        ({"w.in_sum2": np.ones(8, np.float32)}, True, "w has no .counts tensor"),
        ({"w.in_sum2": np.ones(8, np.float16), "w.counts": np.ones(1, np.float32)}, True, "w.in_sum2 is F16, not F32"),
        ({"w.in_sum2": np.ones(8, np.float32), "w.counts": np.ones(1, np.float32)}, False, "without imatrix.datasets"),
        ({"w.weight": np.ones(8, np.float32)}, True, "without *.in_sum2 and *.counts tensors"),
    ],
    ids=["shapes", "no-counts", "f16", "no-metadata", "no-imatrix-tensors"],
)
def test_malformed_imatrix_ggufs_are_refused(tmp_path, tensors, metadata, expected):
    assert expected in error_of(_hand_made_gguf(tmp_path / "bad.gguf", tensors, metadata))


def test_entries_must_be_shaped_consistently():
    with pytest.raises(ValueError, match="not \\(n_mat, n_in\\) and \\(n_mat,\\)"):
        ImatrixEntry(np.ones((2, 8)), np.ones(3))


def test_write_refuses_an_existing_output_without_force(theirs, tmp_path):
    matrix = read_imatrix(theirs["gguf"])
    out = tmp_path / "out.gguf"
    out.write_bytes(b"keep me")
    with pytest.raises(QConvertError, match="output already exists"):
        write_imatrix(out, matrix)
    assert out.read_bytes() == b"keep me"
    write_imatrix(out, matrix, force=True)
    assert_same_matrix(read_imatrix(out), matrix)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.gguf"]  # no temporary file left
