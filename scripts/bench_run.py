"""`make bench-run`: `qconvert run` on the fixture's matrix with the local executor and on a local
Ray instance with the same CPUs — Ray's overhead per stage and for the whole run.

Each round runs the recipe from scratch once per executor (alternating, so that a busy machine
weighs on both alike), into the same RUN_DIR path (artefacts record their inputs' paths: the
imatrix its calibration file), then moves it aside. Per stage: the wall time in its record (the
worker process, as each executor measures it); per run: the whole command, Ray's start and the
storage probe included. The artefacts of the two executors must be byte-identical.

    .venv/bin/python scripts/bench_run.py [--recipe R] [--rounds N] [--out DIR]
    .venv/bin/python scripts/bench_run.py --scale-model    # the README's scale-out model, no runs

The scale-out model: recipes/qwen2.5-release.toml (GPTQ-Int4/Int8, AWQ and its q4_k_m GGUF, seven
GGUF types with an imatrix, an evaluation of each) for Qwen2.5-7B and -72B in one matrix, its
stage graph from the planner, each stage's time from the rates below and its memory from
qconvert.pipeline.resources; then a list schedule (longest ready stage first) on N CPU nodes and G
GPU nodes, one stage per node at a time, against the critical path.
"""

import argparse
import hashlib
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXECUTORS = ("local", "ray")

# Rates of the scale-out model: measured on this project's 2-core machine (the README's bench
# sections) unless said otherwise; a CPU node's scale with its cores (an assumption: memory
# bandwidth caps it sooner).
CPU_NODE_CORES = 32
GGUF_PARAMS_PER_CORE_S = 309e6 / 6.35 / 2  # bench-quantize: q4_k_m of a 309M-parameter f16 GGUF, 6.35 s on 2 threads
TORCH_PARAM_TOKENS_PER_CORE_S = 309e6 * 4096 / 7.79 / 2  # bench-quantize --imatrix-only: qconvert imatrix, 8 × 512 tokens, 7.79 s
LLAMA_PPL_PARAM_TOKENS_PER_CORE_S = 309e6 * 2048 / 42.1 / 2  # llama-perplexity on the same f16 GGUF, 4 chunks of 512, 2 threads: 42.1 s (a busy machine)
GPU_GPTQ_PARAM_TOKENS_S = 175e9 * 128 * 2048 / (4 * 3600)  # GPTQ paper (Frantar et al.): OPT-175B in about 4 hours on one A100
AWQ_OVER_GPTQ = 3.56 / 1.91  # bench-awq against bench-gptq, the fixture, s/layer (qconvert, auto)
IMATRIX_OVER_GPTQ = 1 / 3  # forwards only, no Hessians or solves (assumed)
IO_BYTES_S = 1e9  # reading and writing the shared RUN_DIR (assumed: NFS, a bucket)
EVAL_TOKENS = 29 * 512  # calibration/eval/heldout-en.txt, all chunks of 512
PRESETS = {  # (parameters, non-embedding parameters, layers, hidden, intermediate, vocab): the models' config.json
    "Qwen2.5-7B": (7.62e9, 6.53e9, 28, 3584, 18944, 152064),
    "Qwen2.5-72B": (72.7e9, 70.2e9, 80, 8192, 29568, 152064),
}


def artefact_hashes(run_dir: Path) -> dict[str, str]:
    stages = run_dir / "stages"
    return {str(p.relative_to(stages)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(stages.rglob("out/**/*")) if p.is_file()}


def run_once(recipe: Path, run_dir: Path, executor: str) -> tuple[float, dict]:
    shutil.rmtree(run_dir, ignore_errors=True)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "qconvert", "run", str(recipe), "-o", str(run_dir), "--executor", executor], capture_output=True, text=True)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"{executor} run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, json.loads((run_dir / "report.json").read_text())


def stage_seconds(stage, by_name, preset: tuple) -> tuple[str, float]:
    """(the node it runs on: "gpu" or "cpu", seconds) of one stage of the model `preset`."""
    params, body, _, _, _, _ = preset
    o = stage.options
    if stage.kind in ("gptq", "awq", "imatrix"):
        calib = by_name[stage.inputs["calibration"]].options
        solve = body * calib["n_samples"] * calib["seqlen"] / GPU_GPTQ_PARAM_TOKENS_S
        factor = {"gptq": 1.0, "awq": AWQ_OVER_GPTQ, "imatrix": IMATRIX_OVER_GPTQ}[stage.kind]
        return "gpu", factor * solve + 4 * params / IO_BYTES_S  # + reading bf16, writing its output
    cores = CPU_NODE_CORES
    if stage.kind == "gguf":
        quantize = 0 if o["type"] == "f16" else params / (GGUF_PARAMS_PER_CORE_S * cores)
        return "cpu", quantize + 4 * params / IO_BYTES_S
    if stage.kind == "eval":
        upstream = by_name[stage.inputs["model"]]
        if upstream.kind == "gguf":
            return "cpu", params * EVAL_TOKENS / (LLAMA_PPL_PARAM_TOKENS_PER_CORE_S * cores)
        models = 2 if "base" in stage.inputs else 1  # the torch path, against the original for KLD
        return "cpu", models * params * EVAL_TOKENS / (TORCH_PARAM_TOKENS_PER_CORE_S * cores)
    return "cpu", 60.0  # calibration: tokenizing 128 × 512 tokens


def schedule(stages, seconds: dict, nodes: dict[str, int]) -> float:
    """Makespan of a list schedule: whenever a node is free, the longest ready stage of its kind."""
    import heapq

    done_at: dict[str, float] = {}
    free = {kind: [0.0] * n for kind, n in nodes.items()}
    pending = list(stages)
    while pending:
        ready = [s for s in pending if all(i in done_at or i not in seconds for i in s.inputs.values())]
        kind, stage = max(((seconds[s.name][0], s) for s in ready), key=lambda ks: (ks[1].kind != "calib", seconds[ks[1].name][1]))
        start = max([heapq.heappop(free[kind])] + [done_at[i] for i in stage.inputs.values() if i in done_at])
        done_at[stage.name] = start + seconds[stage.name][1]
        heapq.heappush(free[kind], done_at[stage.name])
        pending.remove(stage)
    return max(done_at.values())


def scale_model() -> str:
    import dataclasses
    import tempfile

    from qconvert.pipeline.plan import build_plan
    from qconvert.pipeline.recipe import Release, load_recipe
    from qconvert.pipeline.resources import ModelSize, estimate_memory

    fixture = ROOT / "tests" / "fixtures" / "tiny-qwen2"
    recipes = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in PRESETS:  # a folder per model, same tokenizer (the graph is the recipe's; sizes come from PRESETS)
            folder = Path(tmp) / name
            shutil.copytree(fixture, folder)
            (folder / "config.json").write_text(json.dumps({**json.loads((fixture / "config.json").read_text()), "name_or_path": name}))
            text = (ROOT / "recipes" / "qwen2.5-release.toml").read_text().replace('"../models/Qwen2.5-0.5B-Instruct"', json.dumps(str(folder)))
            (Path(tmp) / f"{name}.toml").write_text(text)
            recipe = load_recipe(Path(tmp) / f"{name}.toml").recipes[0]
            recipes.append(dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, name=name), run=dataclasses.replace(recipe.run, device="cuda")))
        plan = build_plan(Release(Path(tmp), recipes, matrix=True))
    by_name = {s.name: s for s in plan}
    work = [s for s in plan if s.kind != "source"]
    preset = {s.name: PRESETS.get(s.name.split("/")[0], PRESETS["Qwen2.5-7B"]) for s in work}  # calibration: shared, named by the first
    seconds = {s.name: stage_seconds(s, by_name, preset[s.name]) for s in work}
    sizes = {p: ModelSize(p[1] // p[2], p[5] * p[3], int(p[0]), p[3], p[4], p[5]) for p in PRESETS.values()}
    memory = {s.name: estimate_memory(s, by_name, sizes[preset[s.name]]) / 2**30 for s in work}
    path: dict[str, tuple[float, list[str]]] = {}  # the longest chain ending at each stage
    for s in work:
        before = max((path[i] for i in s.inputs.values() if i in path), default=(0.0, []))
        path[s.name] = (before[0] + seconds[s.name][1], before[1] + [s.name])
    critical, chain = max(path.values())
    lines = [f"Stage graph of recipes/qwen2.5-release.toml for {' and '.join(PRESETS)} (one matrix, run.device = cuda): {len(work)} stages.", ""]
    lines += ["| model | GPU stages | GPU hours | CPU stages | CPU-node hours | largest memory estimate GiB (stage) |", "|---|---|---|---|---|---|"]
    for name in PRESETS:
        mine = [s.name for s in work if s.name.startswith(name + "/")]
        gpu = [n for n in mine if seconds[n][0] == "gpu"]
        cpu = [n for n in mine if seconds[n][0] == "cpu"]
        big = max(mine, key=memory.get)
        lines.append(f"| {name} | {len(gpu)} | {sum(seconds[n][1] for n in gpu) / 3600:.2f} | {len(cpu)} | {sum(seconds[n][1] for n in cpu) / 3600:.2f} | {memory[big]:.0f} ({big.split('/', 1)[1]}) |")
    lines += ["", f"Critical path, {critical / 3600:.2f} h: " + " → ".join(f"{n} ({seconds[n][1] / 60:.0f} min)" for n in chain), ""]
    gpus, cpus = (1, 2, 4, 8), (1, 2, 4, 8, 16)
    lines += ["| CPU nodes \\ GPU nodes | " + " | ".join(map(str, gpus)) + " |", "|---|" + "---|" * len(gpus)]
    for n in cpus:
        lines.append(f"| {n} | " + " | ".join(f"{schedule(work, seconds, {'cpu': n, 'gpu': g}) / 3600:.2f} h" for g in gpus) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "tiny-qwen2-matrix.toml")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench-run")
    parser.add_argument("--scale-model", action="store_true", help="print the scale-out model and stop")
    args = parser.parse_args()
    if args.scale_model:
        print(scale_model())
        return
    out = args.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    run_dir = out / "run"
    walls: dict[str, list[float]] = {e: [] for e in EXECUTORS}
    stage_walls: dict[str, dict[str, list[float]]] = {e: {} for e in EXECUTORS}
    kinds: dict[str, str] = {}
    hashes: dict[str, dict[str, str]] = {}
    for round_ in range(args.rounds):
        for executor in EXECUTORS if round_ % 2 == 0 else reversed(EXECUTORS):
            wall, report = run_once(args.recipe, run_dir, executor)
            walls[executor].append(wall)
            for s in report["stages"]:
                stage_walls[executor].setdefault(s["stage"], []).append(s["wall_s"])
                kinds[s["stage"]] = s["kind"]
            hashes[executor] = artefact_hashes(run_dir)
            kept = out / executor
            shutil.rmtree(kept, ignore_errors=True)
            run_dir.rename(kept)
            print(f"round {round_ + 1}: {executor:5s} {wall:7.1f} s", file=sys.stderr)
    identical = hashes["local"] == hashes["ray"]

    med = {e: {name: statistics.median(v) for name, v in stage_walls[e].items()} for e in EXECUTORS}
    run = {e: statistics.median(walls[e]) for e in EXECUTORS}
    lines = [
        f"`qconvert run {args.recipe.relative_to(ROOT) if args.recipe.is_relative_to(ROOT) else args.recipe}`, {len(kinds)} stages, median of {args.rounds} run(s) per executor; "
        f"artefacts byte-identical: {'yes' if identical else 'NO'} ({len(hashes['local'])} files).",
        "",
        "| stage kind | stages | local s | Ray s | Ray overhead |",
        "|---|---|---|---|---|",
    ]
    by_kind: dict[str, list[str]] = {}
    for name, kind in kinds.items():
        by_kind.setdefault(kind, []).append(name)
    for kind, names in sorted(by_kind.items()):
        local = sum(med["local"][n] for n in names)
        on_ray = sum(med["ray"][n] for n in names)
        lines.append(f"| {kind} | {len(names)} | {local:.1f} | {on_ray:.1f} | {(on_ray - local) / local:+.1%} |")
    local, on_ray = sum(med["local"].values()), sum(med["ray"].values())
    lines.append(f"| all stages (sum) | {len(kinds)} | {local:.1f} | {on_ray:.1f} | {(on_ray - local) / local:+.1%} |")
    outside = {e: statistics.median(w - sum(v[i] for v in stage_walls[e].values()) for i, w in enumerate(walls[e])) for e in EXECUTORS}
    lines.append(f"| outside the stages (start-up, Ray's start and storage probe, dispatch) | | {outside['local']:.1f} | {outside['ray']:.1f} | {(outside['ray'] - outside['local']) / run['local']:+.1%} of the local run |")
    lines.append(f"| **whole run** (the command) | | {run['local']:.1f} | {run['ray']:.1f} | **{(run['ray'] - run['local']) / run['local']:+.1%}** |")
    text = "\n".join(lines) + "\n"
    (out / "bench.md").write_text(text)
    (out / "bench.json").write_text(json.dumps({"recipe": str(args.recipe), "rounds": args.rounds, "run_s": walls, "stage_s": stage_walls, "kinds": kinds, "identical": identical}, indent=1))
    print(text)
    if not identical:
        sys.exit("the executors' artefacts differ")


if __name__ == "__main__":
    main()
