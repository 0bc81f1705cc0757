"""Faults a long run meets, for every single-command writer: the disk filling up (a file-size limit,
RLIMIT_FSIZE, with SIGXFSZ ignored so that writes fail with EFBIG, as on a full disk; and a real
full tmpfs where one can be mounted), a read-only output folder, a read-only or missing input. Each
is one clear error line naming the output, exit code 2, and nothing partial left behind."""

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_cli_limited
from tests.fuzz.conftest import can_mount_tmpfs

# Bytes any one file may grow to, per writer: below each output's size (the small model's GGUFs
# ~0.6-1.1 MB, GPTQ and AWQ folders ~0.8 MB and the 257 KB tokenizer.json, a 16 × 128 calibration
# set 34 KB, its importance matrix ~6 KB).
FILE_LIMIT = {"gguf": 48 << 10, "gguf-gptq": 48 << 10, "quantize": 48 << 10, "calib": 8 << 10, "imatrix": 2 << 10, "gptq": 48 << 10, "awq": 48 << 10}


def _writer_args(writer: str, model: Path, f16: Path, calib: Path, out: Path) -> list:
    # small settings: the point is the write, not the quality
    return {
        "gguf": ["gguf", model, "-o", out, "--type", "q8_0"],
        # the solve spills its tensors and the original model's activations beside the output first
        "gguf-gptq": ["gguf", model, "--calib", calib, "--gptq", "-o", out, "--type", "q8_0"],
        "quantize": ["quantize", f16, out, "q8_0"],
        "calib": ["calib", model, "-o", out, "--n-samples", "16", "--seqlen", "128"],
        "imatrix": ["imatrix", model, "--calib", calib, "-o", out],
        "gptq": ["gptq", model, "--calib", calib, "-o", out, "--group-size", "32"],
        "awq": ["awq", model, "--calib", calib, "-o", out, "--group-size", "32", "--search-tokens", "256"],
    }[writer]


OUTPUT_NAMES = {"gguf": "m.gguf", "gguf-gptq": "g.gguf", "quantize": "q.gguf", "calib": "c.safetensors", "imatrix": "i.gguf", "gptq": "gptq-out", "awq": "awq-out"}


def _assert_clean_failure(proc: subprocess.CompletedProcess, out: Path, words: tuple[str, ...]) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qconvert: error: "), proc.stderr[-3000:]
    assert str(out) in lines[0], lines[0]  # names the output
    assert any(w in lines[0] for w in words), lines[0]
    assert list(out.parent.iterdir()) == [], sorted(p.name for p in out.parent.iterdir())  # nothing partial, no temporary


@pytest.mark.parametrize("writer", list(OUTPUT_NAMES))
def test_file_size_limit_is_a_clear_error_and_leaves_nothing(tmp_path, writer, small_model, small_f16, small_calib):
    out = tmp_path / "out" / OUTPUT_NAMES[writer]
    out.parent.mkdir()
    proc = run_cli_limited(*_writer_args(writer, small_model, small_f16, small_calib, out), file_limit=FILE_LIMIT[writer])
    _assert_clean_failure(proc, out, ("file too large",))


@pytest.fixture
def tmpfs(tmp_path):
    """A 256 KiB tmpfs: smaller than every output, so the disk really fills (ENOSPC)."""
    where = tmp_path / "tmpfs"
    why = can_mount_tmpfs(where)
    if why:
        pytest.skip(f"{why}; the RLIMIT_FSIZE tests cover the same code path")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)], check=True)
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.parametrize("writer", ["gguf", "gptq"])  # one file writer, one folder writer
def test_full_disk_is_a_clear_error_and_leaves_nothing(tmpfs, writer, small_model, small_f16, small_calib):
    out = tmpfs / "out" / OUTPUT_NAMES[writer]
    out.parent.mkdir()
    proc = run_cli_limited(*_writer_args(writer, small_model, small_f16, small_calib, out))
    _assert_clean_failure(proc, out, ("no space left",))
    if writer == "gguf":  # once there is space, the same command writes the output
        again = small_f16.parent / f"again-{out.name}"
        proc = run_cli_limited(*_writer_args(writer, small_model, small_f16, small_calib, again))
        assert proc.returncode == 0 and again.is_file(), proc.stderr[-2000:]
        again.unlink()


@pytest.fixture
def read_only_folder(tmp_path):
    """An empty folder no write can reach: a read-only tmpfs where one can be mounted (root ignores
    permission bits, not a read-only filesystem), else permission bits for a non-root user."""
    where = tmp_path / "ro"
    if os.geteuid() != 0:
        where.mkdir()
        where.chmod(stat.S_IRUSR | stat.S_IXUSR)
        yield where
        where.chmod(stat.S_IRWXU)
        return
    why = can_mount_tmpfs(where)
    if why:
        pytest.skip(f"running as root, where permission bits do not stop writes, and {why}")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(where)], check=True)
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.parametrize("writer", ["gguf", "gptq"])  # a file, a folder
def test_output_in_a_read_only_folder_is_a_clear_error(read_only_folder, writer, small_model, small_f16, small_calib):
    out = read_only_folder / OUTPUT_NAMES[writer]
    proc = run_cli_limited(*_writer_args(writer, small_model, small_f16, small_calib, out))
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not writable" in lines[0] and str(read_only_folder) in lines[0], proc.stderr
    assert list(read_only_folder.iterdir()) == []


def test_read_only_input_folder_converts(tmp_path, small_model):
    """Nothing is written beside the input: a read-only model folder converts."""
    model = tmp_path / "model"
    shutil.copytree(small_model, model)
    for p in [*model.iterdir(), model]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        proc = run_cli_limited("gguf", model, "-o", tmp_path / "m.gguf", "--type", "q8_0")
        assert proc.returncode == 0, proc.stderr
        assert sorted(p.name for p in model.iterdir()) == sorted(p.name for p in small_model.iterdir())
    finally:
        model.chmod(stat.S_IRWXU)


@pytest.mark.parametrize("command", ["gguf", "gptq", "inspect"])  # the others open a model folder the same way (layerwise/session.py)
def test_missing_input_folder_is_a_clear_error(tmp_path, command, small_calib):
    missing = tmp_path / "no-such-model"
    out = tmp_path / "out" / "x"
    out.parent.mkdir()
    args = {"inspect": ["inspect", missing], "gguf": ["gguf", missing, "-o", out], "calib": ["calib", missing, "-o", out]}.get(
        command, [command, missing, "--calib", small_calib, "-o", out]
    )
    proc = run_cli_limited(*args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0], proc.stderr
    assert list(out.parent.iterdir()) == []


def test_unreadable_input_is_a_clear_error(tmp_path, small_f16):
    if os.geteuid() == 0:
        pytest.skip("running as root, which reads files whatever their permission bits")
    src = tmp_path / "in.gguf"
    shutil.copy(small_f16, src)
    src.chmod(0)
    proc = run_cli_limited("quantize", src, tmp_path / "q.gguf", "q8_0")
    assert proc.returncode == 2 and "cannot read" in proc.stderr and str(src) in proc.stderr, proc.stderr
