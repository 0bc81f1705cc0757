"""Our quantized checkpoints loaded by transformers itself, through GPTQModel's CPU kernels, against
our dense unpacking. GPTQModel cannot share the test venv (it wants another torch), so this runs in
the peer venv that `scripts/peers/setup_peers.sh` makes (`make peers`)."""

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import qconvert
from tests.conftest import ROOT

PEER_PYTHON = ROOT / ".venv-gptqmodel" / "bin" / "python"
IDS = [[5, 17, 300, 2000, 40, 41, 42, 43, 1000, 7, 99, 3000], [1, 2, 3, 4, 5, 6, 7, 8]]

needs_gptqmodel = pytest.mark.skipif(not PEER_PYTHON.exists(), reason="GPTQModel is not installed here (it needs its own venv: bash scripts/peers/setup_peers.sh)")


def assert_transformers_matches_our_unpacking(ckpt: Path, tmp_path: Path, loader: str = "transformers", tolerance: float = 2e-3, diverging: int = 0) -> str:
    """Returns the quantized-linear kernel transformers picked. `tolerance`: of the largest logit,
    on every token. `diverging`: how many sequences may leave the tolerance from some token on (not
    the first): in a MoE model a router near-tie can flip on the kernels' rounding, and every later
    token then attends to a token that took other experts. A format misread breaks every token."""
    out = tmp_path / "logits.safetensors"
    proc = subprocess.run(
        [PEER_PYTHON, ROOT / "scripts" / "peers" / "transformers_logits.py", ckpt, "--ids-json", json.dumps(IDS), "--out", out, "--loader", loader],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # GPTQModel writes a logs/ folder where it runs
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = load_file(out)
    model = qconvert.load(ckpt)
    for k, ids in enumerate(IDS):
        with torch.inference_mode():
            ours = model(torch.tensor([ids])).logits[0]
        per_token = (theirs[f"logits_{k}"] - ours).abs().amax(-1)
        over = (per_token > tolerance * float(ours.abs().max())).tolist()
        if any(over):
            diverging -= 1
            assert diverging >= 0 and not over[0], per_token.tolist()
    return proc.stdout
