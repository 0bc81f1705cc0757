"""`qconvert calib` and `qconvert inspect` on its output, run as a user runs them."""


from tests.calib.conftest import CHAT_SAMPLE, EMMA, write_jsonl
from tests.conftest import FIXTURE, run_cli


def _calib(out, *args):
    result = run_cli("calib", FIXTURE, "-o", out, *args)
    assert result.rc == 0, result.stderr
    return result


def test_the_same_inputs_give_a_byte_identical_file_and_another_seed_does_not(tmp_path):
    args = ("--source", EMMA, "--source", CHAT_SAMPLE, "--n-samples", 16, "--seqlen", 128)
    first = _calib(tmp_path / "a.safetensors", *args)
    _calib(tmp_path / "b.safetensors", *args)
    _calib(tmp_path / "c.safetensors", *args, "--seed", 1)
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert (tmp_path / "a.safetensors").read_bytes() != (tmp_path / "c.safetensors").read_bytes()
    assert first.stdout.startswith(f"wrote {tmp_path / 'a.safetensors'}: 16 samples × 128 tokens")


def test_samples_mode_is_reproducible_too(tmp_path):
    args = ("--source", CHAT_SAMPLE, "--mode", "samples", "--n-samples", 20, "--seqlen", 256, "--min-tokens", 64)
    _calib(tmp_path / "a.safetensors", *args)
    _calib(tmp_path / "b.safetensors", *args)
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def test_too_few_tokens_warns_with_the_count_made(tmp_path, paragraphs):
    path = write_jsonl(tmp_path / "few.jsonl", [{"text": p} for p in paragraphs[:3]])
    result = _calib(tmp_path / "c.safetensors", "--source", path, "--mode", "samples", "--n-samples", 10)
    assert "asked for 10 samples of 512 tokens, but the sources hold only 3 distinct documents" in result.stderr
    assert "made 3 samples" in result.stderr
    assert "3 samples × 512 tokens" in result.stdout


def test_inspect_shows_the_manifest_and_decoded_samples(tmp_path):
    out = tmp_path / "c.safetensors"
    _calib(out, "--source", CHAT_SAMPLE, "--mode", "samples", "--n-samples", 8, "--seqlen", 64)
    result = run_cli("inspect", out)
    assert result.rc == 0, result.stderr
    text = result.stdout
    assert "qconvert-calibration version 1" in text
    assert "8 samples × 64 tokens" in text and "mode samples" in text
    assert f"{CHAT_SAMPLE}  chat," in text and "72 documents" in text
    assert f"from {FIXTURE}" in text
    decoded = [line for line in text.splitlines() if line.startswith("  [")]
    assert len(decoded) == 3 and all("'<|im_start|>" in line for line in decoded)


def test_inspect_without_the_tokenizer_shows_token_ids(tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(FIXTURE, model)
    out = tmp_path / "c.safetensors"
    result = run_cli("calib", model, "-o", out, "--source", EMMA, "--n-samples", 4, "--seqlen", 32)
    assert result.rc == 0, result.stderr
    shutil.rmtree(model)
    result = run_cli("inspect", out)
    assert result.rc == 0, result.stderr
    assert "token ids only" in result.stdout and "[0] 32 tokens: [" in result.stdout


def test_the_default_set_builds_128_by_512(tmp_path):
    result = _calib(tmp_path / "c.safetensors")
    assert "128 samples × 512 tokens" in result.stdout and "from 4 source(s)" in result.stdout
