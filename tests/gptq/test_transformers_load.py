"""Optional: our GPTQ checkpoint loaded by transformers itself, through GPTQModel's CPU kernels, gives
the logits of our dense unpacking. GPTQModel cannot share the test venv (it wants another torch), so
this runs in the peer venv that `scripts/peers/setup_peers.sh` makes (`make bench-gptq` does)."""

import json
import subprocess

import pytest
import torch
from safetensors.torch import load_file

import qconvert
from tests.conftest import ROOT

PEER_PYTHON = ROOT / ".venv-gptqmodel" / "bin" / "python"
IDS = [[5, 17, 300, 2000, 40, 41, 42, 43, 1000, 7, 99, 3000], [1, 2, 3, 4, 5, 6, 7, 8]]


@pytest.mark.skipif(not PEER_PYTHON.exists(), reason="GPTQModel is not installed here (it needs its own venv: bash scripts/peers/setup_peers.sh)")
def test_transformers_with_gptqmodel_kernels_matches_our_unpacking(gptq_4bit, tmp_path):
    out = tmp_path / "logits.safetensors"
    subprocess.run(
        [PEER_PYTHON, ROOT / "scripts" / "peers" / "transformers_logits.py", gptq_4bit, "--ids-json", json.dumps(IDS), "--out", out],
        check=True,
        capture_output=True,
        cwd=tmp_path,  # GPTQModel writes a logs/ folder where it runs
        timeout=900,
    )
    theirs = load_file(out)
    model = qconvert.load(gptq_4bit)
    for k, ids in enumerate(IDS):
        with torch.inference_mode():
            ours = model(torch.tensor([ids])).logits[0]
        diff = float((theirs[f"logits_{k}"] - ours).abs().max())
        assert diff < 2e-3 * float(ours.abs().max()), diff
