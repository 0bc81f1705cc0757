"""What the layer-wise benches (GPTQ, AWQ) share: peer venvs, the environment every tool runs in, one
subprocess per tool, quality through `qconvert ppl`, and the markdown table."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FIXTURE = ROOT / "tests" / "fixtures" / "tiny-qwen2"
EVAL_TEXT = ROOT / "calibration" / "eval" / "heldout-en.txt"
PEERS = {"gptqmodel": ROOT / ".venv-gptqmodel" / "bin" / "python", "llmcompressor": ROOT / ".venv-llmcompressor" / "bin" / "python"}
THREADS = 2
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "GPTQMODEL_CPU_WORKERS": str(THREADS)}


def run(cmd: list, log: Path, cwd: Path) -> None:
    with open(log, "w") as f:
        subprocess.run([str(c) for c in cmd], check=False, stdout=f, stderr=subprocess.STDOUT, env=ENV, cwd=cwd)


def run_tool(cmd: list, out: Path, cwd: Path) -> dict:
    """Runs one tool's process, which writes out.json; its log goes to out.log."""
    result_json = out.with_suffix(".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    result_json.unlink(missing_ok=True)
    run(cmd, out.with_suffix(".log"), cwd)
    if not result_json.exists():
        return {"error": f"no result; see {out.with_suffix('.log')}"}
    return json.loads(result_json.read_text())


def quality(model: Path, base: Path = FIXTURE) -> dict:
    """Perplexity and KL divergence from `base` on the held-out text (torch for HF folders, llama.cpp for GGUF)."""
    proc = subprocess.run([sys.executable, "-m", "qconvert", "ppl", model, "--text", EVAL_TEXT, "--kld-base", base, "--json"], capture_output=True, text=True, env=ENV)
    return json.loads(proc.stdout) if proc.returncode == 0 else {}


def calibration(work: Path, n_samples: int, seqlen: int) -> Path:
    calib = work / f"calib-{n_samples}x{seqlen}.safetensors"
    if not calib.exists():
        subprocess.run([sys.executable, "-m", "qconvert", "calib", FIXTURE, "-o", calib, "--n-samples", str(n_samples), "--seqlen", str(seqlen)], check=True)
    return calib


def require_peers(*names: str) -> None:
    missing = [name for name in names if not PEERS[name].exists()]
    if missing:
        sys.exit(f"peer venvs missing ({', '.join(missing)}): run bash scripts/peers/setup_peers.sh (make peers)")


def print_table(rows: list, calib: Path, reference: str) -> None:
    """rows: (model, setting, tool, result, quality); ratios against the `reference` tool's s/layer,
    in wall time and in CPU time (user + system of the tool's process: steadier than wall time on a
    machine with other work)."""
    ours = {(m, s): r for m, s, t, r, _ in rows if t == reference and "seconds_per_layer" in r}
    print(f"\ncalibration: {calib.name}; threads {THREADS}; seconds per layer = quantization wall (CPU) time / layers")
    print(f"| model | setting | tool | s/layer | × {reference} | CPU s/layer | × (CPU) | peak RSS MiB | ppl | KLD vs fp16 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model, setting, tool, r, q in rows:
        base = ours.get((model, setting), {})
        cells = []
        for key in ("seconds_per_layer", "cpu_seconds_per_layer"):
            value, ref = r.get(key), base.get(key)
            cells += [f"{value:.2f}" if value else "", f"{value / ref:.1f}" if value and ref else ""]
        err = f" ({r['error'][:60]})" if "error" in r else ""
        rss = f"{r['peak_rss_mib']:.0f}" if r.get("seconds_per_layer") else ""
        ppl = f"{q['ppl']:.3f}" if "ppl" in q else ""
        kld = f"{q['kld_mean']:.2e}" if "kld_mean" in q else ""
        print(f"| {model} | {setting} | {tool}{err} | {' | '.join(cells)} | {rss} | {ppl} | {kld} |")
