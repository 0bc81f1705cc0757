"""Bad calibration input: one clear error line, exit code 2, and no output file."""

import json
from pathlib import Path

import pytest

from tests.calib.conftest import CHAT_SAMPLE, EMMA
from tests.conftest import FIXTURE, run_cli


def _empty(d: Path) -> Path:
    (d / "empty.txt").write_text("\n  \n")
    return d / "empty.txt"


def _malformed_jsonl(d: Path) -> Path:
    lines = [json.dumps({"text": "fine"}), json.dumps({"text": "also fine"}), '{"text": "broken', json.dumps({"text": "x"})]
    (d / "bad.jsonl").write_text("\n".join(lines) + "\n")
    return d / "bad.jsonl"


def _chat_missing_content(d: Path) -> Path:
    records = [{"messages": [{"role": "user", "content": "hi"}]}, {"messages": [{"role": "user", "content": "q"}, {"role": "assistant"}]}]
    (d / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return d / "chat.jsonl"


def _chat_missing_role(d: Path) -> Path:
    (d / "chat.jsonl").write_text(json.dumps({"messages": [{"content": "no role"}]}) + "\n")
    return d / "chat.jsonl"


def _binary(d: Path) -> Path:
    (d / "blob.txt").write_bytes(bytes(range(256)) * 4)
    return d / "blob.txt"


def _latin1(d: Path) -> Path:
    (d / "latin1.txt").write_bytes("Café crème, déjà vu.\n".encode("latin-1"))
    return d / "latin1.txt"


def _unknown_suffix(d: Path) -> Path:
    (d / "data.xyz").write_text("some text\n")
    return d / "data.xyz"


def _missing(d: Path) -> Path:
    return d / "nope.txt"


def _not_parquet(d: Path) -> Path:
    (d / "fake.parquet").write_text("this is not parquet\n")
    return d / "fake.parquet"


def _no_text_column(d: Path) -> Path:
    (d / "rows.jsonl").write_text(json.dumps({"body": "text under another name"}) + "\n")
    return d / "rows.jsonl"


@pytest.mark.parametrize(
    "make, extra, message",
    [
        (_empty, (), "empty.txt: empty file"),
        (_malformed_jsonl, (), "bad.jsonl:3: malformed JSON line"),
        (_chat_missing_content, (), "chat.jsonl:2: chat message 2 has no 'content'"),
        (_chat_missing_role, (), "chat.jsonl:1: chat message 1 has no 'role'"),
        (_binary, (), "blob.txt: binary file, not text (a NUL byte at offset 0)"),
        (_latin1, (), "latin1.txt: not UTF-8 text (byte 0xe9 at offset 3)"),
        (_unknown_suffix, (), "data.xyz: cannot tell the format from the suffix '.xyz'"),
        (_unknown_suffix, ("--format", "xml"), "--format: unknown format 'xml' (choose one of: auto, text, jsonl, chat, parquet"),
        (_missing, (), "nope.txt: no such file or folder"),
        (_not_parquet, (), "fake.parquet: datasets cannot read it as parquet"),
        (_no_text_column, (), "rows.jsonl:1: record has no 'text' field (it has: body) (name the field with --field)"),
        (lambda d: EMMA, ("--seqlen", 0), "--seqlen: seqlen must be at least 1"),
        (lambda d: EMMA, ("--seqlen", 10**6), "less than one --seqlen 1000000 window"),
        (lambda d: EMMA, ("--mode", "random"), "unknown mode 'random'"),
    ],
    ids=[
        "empty-file", "malformed-jsonl", "chat-no-content", "chat-no-role", "binary", "not-utf8", "unknown-suffix",
        "unknown-format", "missing", "not-parquet", "no-text-field", "zero-seqlen", "too-few-tokens", "unknown-mode",
    ],
)
def test_bad_input_is_one_clear_error_and_no_output(tmp_path, make, extra, message):
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    source = make(src_dir)
    result = run_cli("calib", FIXTURE, "-o", out_dir / "calib.safetensors", "--source", source, *extra)
    assert result.rc == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qconvert: error: ") and message in lines[0], result.stderr
    assert list(out_dir.iterdir()) == []


def test_chat_data_for_a_tokenizer_without_a_chat_template(tmp_path, model_without_chat_template):
    out = tmp_path / "calib.safetensors"
    result = run_cli("calib", model_without_chat_template, "-o", out, "--source", CHAT_SAMPLE)
    assert result.rc == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "chat data needs the model's chat template, and this tokenizer has none" in lines[0]
    assert str(CHAT_SAMPLE) in lines[0]
    assert not out.exists()


def test_an_existing_output_is_kept_without_force(tmp_path):
    out = tmp_path / "calib.safetensors"
    out.write_bytes(b"precious")
    result = run_cli("calib", FIXTURE, "-o", out, "--source", EMMA, "--n-samples", 2, "--seqlen", 16)
    assert result.rc == 2 and "--force" in result.stderr
    assert out.read_bytes() == b"precious"


def test_a_missing_model_folder(tmp_path):
    result = run_cli("calib", tmp_path / "no-model", "-o", tmp_path / "c.safetensors", "--source", EMMA)
    assert result.rc == 2 and "no such model folder" in result.stderr
    assert list(tmp_path.iterdir()) == []
