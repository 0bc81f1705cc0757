"""Shared fixtures: the bundled tiny Qwen2 model, its GGUF conversions, and a CLI runner."""

import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from qconvert.convert.hf_to_gguf import ConvertOptions, convert_hf_to_gguf
from qconvert.quant.file_types import FileType
from qconvert.llama_cpp import find_tool

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "tiny-qwen2"
EVAL_TEXT = ROOT / "calibration" / "eval" / "heldout-en.txt"
PPL_CHUNKS = 8  # enough tokens (8 × 255) for a stable comparison, fast on 2 cores


@dataclass
class CliResult:
    rc: int
    stdout: str
    stderr: str


def run_cli(*args: object, cwd: Path | None = None) -> CliResult:
    """Run `python -m qconvert ARGS` as a user would, without a TTY."""
    proc = subprocess.run(
        [sys.executable, "-m", "qconvert", *map(str, args)], capture_output=True, text=True, cwd=cwd, env={**os.environ}
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def run_cli_limited(*args: object, file_limit: int | None = None) -> subprocess.CompletedProcess:
    """`python -m qconvert ARGS` with SIGXFSZ ignored and, given `file_limit`, no file allowed to grow
    past that many bytes (RLIMIT_FSIZE): writes then fail with EFBIG, as on a full disk."""
    def limits() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        if file_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return subprocess.run([sys.executable, "-m", "qconvert", *map(str, args)], capture_output=True, text=True, timeout=600, preexec_fn=limits)


def interrupt_cli(*args: object, ready: Callable[[], bool], settle: float = 0.0) -> tuple[int, str]:
    """Start `python -m qconvert ARGS`, send SIGINT once `ready()` holds (plus `settle` seconds) or
    it has run a minute, and return its exit code and stderr."""
    # A background job (`make test &`, nohup, CI) starts with SIGINT ignored, and Python keeps an
    # ignored SIGINT ignored: give the child the default disposition a terminal would.
    proc = subprocess.Popen(
        [sys.executable, "-m", "qconvert", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
    )
    deadline = time.time() + 60
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(settle)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    return proc.returncode, stderr


def ppl_json(*args: object) -> dict:
    result = run_cli("ppl", *args, "--json")
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


def assert_one_error(result: CliResult, message: str, parent: Path) -> None:
    """Exit code 2, one error line naming `message`, and nothing left in the output's parent folder."""
    assert result.rc == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert list(parent.iterdir()) == []


# The bundled calibration set, cut smaller than the defaults (128 × 512) to keep the suite fast.
CALIB_ARGS = ("--n-samples", "64", "--seqlen", "256")


@pytest.fixture(scope="session")
def small_calib(tmp_path_factory) -> Path:
    """2,048 tokens of the fixture's tokenizer, the least the layer-wise driver takes: for runs that
    check a format, an error or an exact identity, not the quality of the statistics."""
    out = tmp_path_factory.mktemp("small-calib") / "calib.safetensors"
    result = run_cli("calib", FIXTURE, "-o", out, "--n-samples", "16", "--seqlen", "128")
    assert result.rc == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def calib_file(tmp_path_factory) -> Path:
    """A calibration file of the fixture's tokenizer, for GPTQ, AWQ and the random Llama models."""
    out = tmp_path_factory.mktemp("calib") / "calib.safetensors"
    result = run_cli("calib", FIXTURE, "-o", out, *CALIB_ARGS)
    assert result.rc == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def llama_tools() -> None:
    """The bundled llama.cpp build must be there: `make test` builds it before the suite runs."""
    for tool in ("llama-perplexity", "llama-tokenize", "llama-quantize", "llama-imatrix", "llama-cli"):
        find_tool(tool)


@pytest.fixture(scope="session")
def gguf_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gguf")


def convert(model_dir: Path, out: Path, out_type: FileType = FileType.F16) -> Path:
    return convert_hf_to_gguf(model_dir, out, ConvertOptions(file_type=out_type, progress=False))


@pytest.fixture(scope="session")
def fixture_f16(gguf_dir) -> Path:
    return convert(FIXTURE, gguf_dir / "tiny-qwen2-f16.gguf")


@pytest.fixture(scope="session")
def fixture_config() -> dict:
    return json.loads((FIXTURE / "config.json").read_text())


@pytest.fixture(scope="session")
def odd_llama_f16(tmp_path_factory):
    """Random Llama: hidden 384 (not a multiple of 256), ffn 1000 (not even of 32), GQA 4, 16
    layers (so every layer rule has both outcomes), tied embeddings."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.variants import copy_tokenizer

    d = tmp_path_factory.mktemp("odd-llama")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=4096,
        hidden_size=384,
        intermediate_size=1000,
        num_hidden_layers=16,
        num_attention_heads=8,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        max_position_embeddings=512,
    )
    model = LlamaForCausalLM(config)
    model.to(torch.float16).save_pretrained(d / "hf")
    copy_tokenizer(d / "hf")
    return convert(d / "hf", d / "odd-llama-f16.gguf")
