"""`qconvert inspect` on a GGUF file and on an HF folder."""

import struct

import pytest

from tests.conftest import FIXTURE, run_cli


def test_inspect_gguf_shows_metadata_and_tensor_table(fixture_f16):
    result = run_cli("inspect", fixture_f16)
    assert result.rc == 0, result.stderr
    out = result.stdout
    assert "general.architecture = 'qwen2'" in out
    assert "tokenizer.ggml.pre = 'qwen2'" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  blk.") or line.startswith("  token_embd")}
    assert rows["token_embd.weight"][1:3] == ["256x4096", "F16"]
    assert rows["blk.0.attn_norm.weight"][1:4] == ["256", "F32", "1,024"]
    assert rows["blk.3.ffn_down.weight"][1:4] == ["768x256", "F16", "393,216"]


def test_inspect_hf_folder_shows_architecture_and_tensors():
    result = run_cli("inspect", FIXTURE)
    assert result.rc == 0, result.stderr
    assert "architecture: Qwen2ForCausalLM" in result.stdout
    assert "model.layers.0.self_attn.q_proj.bias" in result.stdout


def test_inspect_something_else_is_a_clear_error(tmp_path):
    result = run_cli("inspect", tmp_path / "nothing")
    assert result.rc == 2 and "nothing to inspect" in result.stderr


def _first_string_length_offset(data: bytes) -> int:
    """Offset of the first metadata key's u64 length, right after the 24-byte GGUF header."""
    assert data[:4] == b"GGUF"
    return 24


def test_inspect_reads_gguf_with_qconverts_own_reader(fixture_f16, monkeypatch):
    """Not gguf-py's GGUFReader, which ends in an IndexError on a damaged length (issue 15)."""
    import gguf

    from qconvert.inspect_model import describe

    monkeypatch.setattr(gguf, "GGUFReader", None)
    lines = describe(fixture_f16)
    assert any("tokenizer.ggml.tokens = [4096 items]" in line for line in lines)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("string length", 2**40, "past the end of the file"),  # the example
        ("tensor count", 2**63, "more than the file"),
        ("metadata count", 2**64 - 1, "more than the file"),
    ],
)
def test_inspect_damaged_gguf_is_one_clear_line(tmp_path, fixture_f16, field, value, message):
    data = bytearray(fixture_f16.read_bytes()[: 1 << 20])  # the header and some data: a truncated copy
    offset = {"string length": _first_string_length_offset(data), "tensor count": 8, "metadata count": 16}[field]
    struct.pack_into("<Q", data, offset, value)
    path = tmp_path / "damaged.gguf"
    path.write_bytes(bytes(data))
    result = run_cli("inspect", path)
    assert result.rc == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(path) in lines[0], result.stderr


def test_inspect_truncated_gguf_names_where(tmp_path, fixture_f16):
    path = tmp_path / "cut.gguf"
    path.write_bytes(fixture_f16.read_bytes()[:5000])
    result = run_cli("inspect", path)
    assert result.rc == 2 and "truncated GGUF" in result.stderr and "at byte" in result.stderr, result.stderr
