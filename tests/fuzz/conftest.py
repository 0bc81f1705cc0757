"""Fixtures of the fuzz and fault tests: a small Hugging Face model (a random one-layer Llama with the
fixture's tokenizer: converted, quantized and calibrated in seconds), its f16 GGUF, a calibration set."""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli
from tests.fuzz.seeds import make_hf_model
from tests.fuzz.table import KINDS

# The suite runs a few hundred cases per input kind; `make fuzz` sets thousands.
FUZZ_CASES = int(os.environ.get("QCONVERT_FUZZ_CASES", "300"))
FUZZ_SEED = int(os.environ.get("QCONVERT_FUZZ_SEED", "0"))
RESULTS = ROOT / "build" / "fuzz"  # for the README table: python -m tests.fuzz.table build/fuzz
WORKER_TIMEOUT = 600
KEEP = 3  # cases of each outcome kept for the CLI sample


def _run_worker(kind: str, work: Path, model: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    out = work / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.worker", kind, "--cases", str(FUZZ_CASES), "--seed", str(FUZZ_SEED), "--work", str(work),
         "--out", str(out), "--keep", str(KEEP), "--hf-model", str(model)],
        capture_output=True, text=True, timeout=WORKER_TIMEOUT, cwd=ROOT,
    )
    if proc.returncode != 0 or not out.is_file():
        current = (work / "current-case.txt").read_text() if (work / "current-case.txt").is_file() else "(none started)"
        return {"kind": kind, "crashed": f"worker exit {proc.returncode} during case {current}\n{proc.stderr[-3000:]}"}
    result = json.loads(out.read_text())
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{kind}.json").write_text(json.dumps(result, indent=1))
    return result


@pytest.fixture(scope="session")
def fuzz_results(small_model, tmp_path_factory) -> dict[str, dict]:
    """All kinds, two workers at a time (the machine's two cores)."""
    root = tmp_path_factory.mktemp("fuzz")
    with ThreadPoolExecutor(2) as pool:
        results = pool.map(lambda kind: _run_worker(kind, root / kind.replace(".", "-"), small_model), KINDS)
    return {r["kind"]: {**r, "work": root / r["kind"].replace(".", "-")} for r in results}




@pytest.fixture(scope="session")
def small_model(tmp_path_factory) -> Path:
    return make_hf_model(tmp_path_factory.mktemp("fuzz-model") / "model")


@pytest.fixture(scope="session")
def small_f16(small_model, tmp_path_factory) -> Path:
    from tests.conftest import convert

    return convert(small_model, tmp_path_factory.mktemp("fuzz-gguf") / "small-f16.gguf")


@pytest.fixture(scope="session")
def small_calib(small_model, tmp_path_factory) -> Path:
    """1024 tokens: the least GPTQ, AWQ and the importance matrix take."""
    out = tmp_path_factory.mktemp("fuzz-calib") / "calib.safetensors"
    result = run_cli("calib", small_model, "-o", out, "--n-samples", "8", "--seqlen", "128")
    assert result.rc == 0, result.stderr
    return out


def can_mount_tmpfs(where: Path) -> str | None:
    """None if a tmpfs can be mounted here (root with CAP_SYS_ADMIN), else why not."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    where.mkdir(exist_ok=True)
    probe = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot mount a tmpfs here: {probe.stderr.strip() or probe.returncode}"
    subprocess.run(["umount", str(where)], check=True)
    return None
