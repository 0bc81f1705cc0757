"""GPTQ on CPU: qconvert against GPTQModel and llm-compressor, in one run (`make bench-gptq`).

Same model, same calibration tokens (one qconvert calibration file), same bits/group/sym/damping,
same threads, OMP_WAIT_POLICY=PASSIVE for every tool. Each tool runs in its own process (the peers
in their own venvs, made by scripts/peers/setup_peers.sh); seconds per layer is the wall time of
the quantization call (loading, calibration forwards, solves, packing, saving) over the number of
decoder layers, for every tool alike. Quality on the trained fixture: perplexity and KL divergence
from the unquantized model on the held-out text, all measured by `qconvert ppl` (torch), the
peers' results through dense copies of their fake-quantized weights.

qconvert runs with --compute-dtype auto (bfloat16 on CUDA, on CPUs with AMX and on AMD CPUs with AVX512-BF16, else float32) and,
where that is not float32, again with float32, the peers' precision on CPU.

    .venv/bin/python scripts/bench_gptq.py [--layers 4] [--n-samples 64] [--seqlen 512] [--device cuda]
"""

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import FIXTURE, PEERS, ROOT, THREADS, calibration, print_table, quality, require_peers, run_tool  # noqa: E402

WORK = ROOT / "build" / "bench-gptq"


def run_ours_inside(args: argparse.Namespace) -> None:
    """The timed qconvert run, in its own process like the peers'."""
    import torch

    from qconvert.calib.types import CalibInput
    from qconvert.gptq.config import GPTQConfig
    from qconvert.gptq.run import quantize_gptq
    from qconvert.layerwise.session import RunOptions, open_session, parse_compute_dtype

    torch.set_num_threads(args.threads)
    config = GPTQConfig(bits=args.bits, group_size=args.group_size, sym=args.sym, damp_percent=args.damp)
    options = RunOptions(device=args.device, threads=args.threads, force=True, progress=False, dtype=parse_compute_dtype(args.dtype, args.device))
    layers = json.loads((args.model / "config.json").read_text())["num_hidden_layers"]
    # Imports and the tokenizer warm before the clock starts, as the peers' timed calls begin after
    # their model is loaded; qconvert's own loading (it streams the layers) stays inside.
    open_session(args.model, options)
    start, cpu_start = time.perf_counter(), time.process_time()
    quantize_gptq(args.model, args.out, CalibInput(file=args.calib), config, options)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    result = {"tool": f"qconvert ({args.dtype})", "seconds_total": seconds, "seconds_per_layer": seconds / layers, "cpu_seconds_per_layer": cpu / layers,
              "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    args.json.write_text(json.dumps(result))


def quantize(tool: str, model: Path, calib: Path, bits: int, group_size: int, sym: bool, tag: str, device: str) -> tuple[dict, Path]:
    """Runs one tool; returns its result and the folder `qconvert ppl` can measure."""
    out = WORK / "out" / tag
    result_json = out.with_suffix(".json")
    if tool in PEERS:
        cmd = [PEERS[tool], ROOT / "scripts" / "peers" / "run_peer_gptq.py", "--tool", tool, "--model", model, "--calib", calib, "--bits", bits,
               "--group-size", group_size, "--sym" if sym else "--asym", "--damp", 0.01, "--threads", THREADS,
               "--out", out / "checkpoint", "--dense-out", out / "dense", "--json", result_json]
        measured = out / "dense"
    else:
        cmd = [sys.executable, __file__, "--inside", "--model", model, "--calib", calib, "--bits", bits, "--group-size", group_size,
               "--sym" if sym else "--asym", "--dtype", tool.split(":")[1], "--device", device, "--threads", THREADS, "--out", out, "--json", result_json]
        measured = out
    return run_tool(cmd, out, WORK), measured


def rtn_dense(bits: int, group_size: int, sym: bool, out: Path) -> Path:
    from qconvert.gptq.config import GPTQConfig
    from qconvert.gptq.solve import round_to_nearest
    from tests.variants import fake_quantized_copy

    config = GPTQConfig(bits=bits, group_size=group_size, sym=sym)
    return fake_quantized_copy(FIXTURE, out, lambda w: round_to_nearest(w, config).dequantized())


def make_models(layers: int, smol_layers: int) -> tuple[Path, Path]:
    """Random-weight Llamas: SmolLM2-135M's shapes (hidden 576, ffn 1536, 9/3 heads, tied, vocab
    49152; its 30 layers by default, so that each tool's fixed costs weigh as they do on the real
    model), and a wider one (hidden 1024, ffn 2816, 16/8 heads)."""
    from tests.gptq.models import make_random_llama

    smol = WORK / f"smollm2-shaped-{smol_layers}l"
    if not (smol / "config.json").exists():
        make_random_llama(smol, hidden=576, intermediate=1536, layers=smol_layers, heads=9, kv_heads=3, tied=True, vocab=49152)
    big = WORK / f"llama1024-{layers}l"
    if not (big / "config.json").exists():
        make_random_llama(big, hidden=1024, intermediate=2816, layers=layers, heads=16, kv_heads=8, tied=False)
    return smol, big


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", type=Path)
    p.add_argument("--calib", type=Path)
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--group-size", type=int, default=64)
    p.add_argument("--sym", action="store_true", default=True)
    p.add_argument("--asym", dest="sym", action="store_false")
    p.add_argument("--damp", type=float, default=0.01)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--threads", type=int, default=THREADS)
    p.add_argument("--device", default="cpu", help="qconvert's device (cpu or cuda); the peers' runner is CPU-only")
    p.add_argument("--out", type=Path)
    p.add_argument("--json", type=Path)
    p.add_argument("--layers", type=int, default=4, help="decoder layers of the random hidden-1024 model")
    p.add_argument("--smollm2-layers", type=int, default=30, help="decoder layers of the SmolLM2-shaped model (SmolLM2-135M has 30)")
    p.add_argument("--n-samples", type=int, default=64)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--cases", default="fixture,smollm2,llama1024", help="comma-separated: fixture (quality), smollm2 (SmolLM2-135M's shapes, the issue's reference), llama1024")
    args = p.parse_args()
    if args.inside:
        return run_ours_inside(args)

    require_peers("gptqmodel", "llmcompressor")
    WORK.mkdir(parents=True, exist_ok=True)
    calib = calibration(WORK, args.n_samples, args.seqlen)
    smol, big = make_models(args.layers, args.smollm2_layers)
    import torch

    from qconvert.layerwise.session import parse_compute_dtype

    auto = parse_compute_dtype("auto", args.device)
    print(f"--compute-dtype auto is {auto} here", flush=True)
    # where auto is float32 already, the float32 run would repeat it
    tools = ["qconvert:auto"] + (["qconvert:float32"] if auto != torch.float32 else []) + ["llmcompressor", "gptqmodel"]
    chosen = set(args.cases.split(","))
    cases = [(FIXTURE, 4, 64, True), (FIXTURE, 4, 64, False), (FIXTURE, 3, 64, True)] if "fixture" in chosen else []
    cases += [(model, 4, 64, True) for name, model in (("smollm2", smol), ("llama1024", big)) if name in chosen]

    rows = []
    for model, bits, group_size, sym in cases:
        setting = f"W{bits} g{group_size} {'sym' if sym else 'asym'}"
        is_fixture = model == FIXTURE
        if is_fixture:
            rtn = rtn_dense(bits, group_size, sym, WORK / "out" / f"rtn-w{bits}g{group_size}{'s' if sym else 'a'}")
            rows.append((model.name, setting, "round-to-nearest", {}, quality(rtn)))
        for tool in tools:
            tag = f"{model.name}-w{bits}g{group_size}{'s' if sym else 'a'}-{tool.replace(':', '-')}"
            result, measured = quantize(tool, model, calib, bits, group_size, sym, tag, args.device)
            q = quality(measured) if is_fixture and "error" not in result else {}
            rows.append((model.name, setting, result.get("tool", tool) if "error" not in result else tool, result, q))
            print(rows[-1], flush=True)
    print_table(rows, calib, "qconvert (auto)")


if __name__ == "__main__":
    main()
