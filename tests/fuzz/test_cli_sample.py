"""A sample of the fuzz corpus through the real CLI, as a user meets it: under a 3 GiB address-space
cap (RLIMIT_AS) and a time limit, each run exits 0 with an output that reads back, or exits 2 with
one line on stderr and nothing left in the output folder — never a traceback or a signal."""

import json
import os
import resource
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.fuzz.table import KINDS
from tests.fuzz.conftest import RESULTS

ADDRESS_SPACE = 3 << 30  # torch alone maps ~0.7 GiB; inputs are under 2 MB
TIMEOUT = 180


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def _cli(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qconvert", *map(str, args)], capture_output=True, text=True, timeout=TIMEOUT, preexec_fn=_limits)


def _check(proc: subprocess.CompletedProcess, out_dir: Path, output: Path | None) -> str:
    """exit2, exit0 or other (with why), checking the one-line error and what is left behind."""
    if "Traceback" in proc.stderr or proc.returncode not in (0, 2):
        return f"other: exit {proc.returncode}\n{proc.stderr[-2000:]}"
    if proc.returncode == 2:
        lines = proc.stderr.strip().splitlines()
        if len(lines) != 1 or not lines[0].startswith("qconvert: error: "):
            return f"other: not one error line\n{proc.stderr[-2000:]}"
        if list(out_dir.iterdir()):
            return f"other: left {sorted(p.name for p in out_dir.iterdir())}"
        return "exit2"
    if output is not None:
        from qconvert.gguf_read import read_gguf_header

        try:
            read_gguf_header(output)
        except Exception as exc:  # noqa: BLE001
            return f"other: output does not read back: {exc}"
    return "exit0"


def _runs(kind: str, case: Path, outcome: str, work: Path, small_model: Path, seed_dir: Path) -> list[tuple[str, list, Path | None]]:
    """(label, CLI arguments, output) of each run for one kept case."""
    out_dir = work / "out"
    if kind == "gguf":
        return [("inspect", ["inspect", case], None), ("quantize", ["quantize", case, out_dir / "q.gguf", "q4_k_m"], out_dir / "q.gguf")]
    if kind.startswith("imatrix"):
        return [("quantize", ["quantize", seed_dir / "model.gguf", out_dir / "q.gguf", "q4_k_m", "--imatrix", case], out_dir / "q.gguf")]
    if kind == "calibration":
        return [("inspect", ["inspect", case], None)]
    if kind == "recipe":  # the recipe beside the seed's model and texts; --dry-run: the plan, no stage run
        recipe = seed_dir.parent / "recipe" / f"cli-{case.name}"
        shutil.copyfile(case, recipe)
        return [("run --dry-run", ["run", recipe, "--dry-run", "-o", out_dir / "run"], None)]
    from tests.fuzz import seeds

    folder = work / "model"
    shutil.rmtree(folder, ignore_errors=True)
    makers = {"safetensors-index": seeds.make_sharded, "tokenizer.model": seeds.make_spm_model,
              "gptq-checkpoint": seeds.make_gptq_model, "awq-checkpoint": seeds.make_awq_model}
    if kind in makers:
        makers[kind](small_model, folder)
    else:
        shutil.copytree(small_model, folder)
    raw = case.read_bytes()
    target = {"safetensors": "model.safetensors", "safetensors-index": "model-00001-of-00002.safetensors", "gptq-checkpoint": "model.safetensors",
              "awq-checkpoint": "model.safetensors"}.get(kind, kind)
    for mark, name in ((b"INDEX", "model.safetensors.index.json"), (b"CONFIG", "config.json"), (b"TOKCFG", "tokenizer_config.json")):
        if raw.startswith(mark):
            target, raw = name, raw[len(mark) :]
    (folder / target).write_bytes(raw)
    runs = [("gguf", ["gguf", folder, "-o", out_dir / "m.gguf", "--type", "q8_0"], out_dir / "m.gguf")]
    if kind in ("safetensors", "config.json") and outcome == "error":  # what inspect reads of a folder
        runs.append(("inspect", ["inspect", folder], None))
    return runs


# Cases of each outcome per kind: the commands that load torch or transformers cost seconds a run.
SAMPLE = {"gguf": 2, "imatrix-gguf": 2, "imatrix-dat": 2}


@pytest.mark.parametrize("kind", list(KINDS))
def test_cli_sample(fuzz_results, small_model, kind):
    r = fuzz_results[kind]
    n = SAMPLE.get(kind, 1)
    cases = [(p, outcome) for outcome in ("error", "valid") for p in sorted((r["work"] / "kept").glob(f"*-{outcome}.*")) if p.suffix != ".txt"]
    cases = [c for c in cases if c[1] == "error"][:n] + [c for c in cases if c[1] == "valid"][:n]
    assert cases, f"the {kind} worker kept no cases"
    jobs = []
    for case, outcome in cases:
        work = r["work"] / "cli" / case.stem
        for label, args, output in _runs(kind, case, outcome, work, small_model, r["work"] / "seed"):
            jobs.append((case, label, args, output, work / "out"))  # runs of one case go one after the other
    outcomes: list[tuple[str, str]] = []

    def one(job):
        case, label, args, output, out_dir = job
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir(parents=True)
        return f"{case.name} {label}", _check(_cli(*args), out_dir, output)

    by_case: dict[Path, list] = {}
    for job in jobs:
        by_case.setdefault(job[0], []).append(job)
    with ThreadPoolExecutor(2) as pool:  # two cases at a time; a case's runs share its output folder
        outcomes = [o for per_case in pool.map(lambda js: [one(j) for j in js], by_case.values()) for o in per_case]
    counts = {"runs": len(outcomes), "exit2": 0, "exit0": 0, "other": 0}
    for _, outcome in outcomes:
        counts[outcome if outcome in ("exit2", "exit0") else "other"] += 1
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"cli-{kind}.json").write_text(json.dumps(counts))
    bad = [f"{name}: {outcome}" for name, outcome in outcomes if outcome not in ("exit2", "exit0")]
    assert not bad, "\n\n".join(bad)
    assert os.path.isdir(RESULTS)
