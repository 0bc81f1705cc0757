"""AWQ on CPU: qconvert against llm-compressor's AWQ, in one run (`make bench-awq`); then the GGUF
route: AWQ-scaled fp16 exports quantized by llama.cpp's rules against the unscaled model.

Speed and quality: same model, same calibration tokens (the default set, 128 × 512 in concat mode
as AutoAWQ cuts pile-val), same bits/group/zero point, same threads, OMP_WAIT_POLICY=PASSIVE for
both tools, each in its own process. Seconds per layer is the wall time of the quantization call
(loading, calibration forwards, searches, packing, saving) over the number of decoder layers.
llm-compressor needs a runtime patch to run on a CPU-only torch (scripts/peers/run_peer_awq.py) and
has no clip search; it runs with its range-shrinking (MSE) weight observer, its nearest analogue.
Quality on the trained fixture and on its variant with real-model activation outliers
(tests/awq/models.py): perplexity and KL divergence from the unquantized model on the held-out
text, measured by `qconvert ppl` (torch), llm-compressor's through a dense copy.

GGUF route (--gguf-route, on by default): the fixture and its outlier variant, each converted to q4_0, q4_k_m and q3_k_m unscaled and after AWQ
scaling (searched against llama.cpp's own quantizer, --gguf-type; and against AutoAWQ's grid,
with and without clipping); KL divergence from the f16 GGUF by llama-perplexity.

    .venv/bin/python scripts/bench_awq.py [--layers 4] [--n-samples 128] [--seqlen 512] [--device cuda] [--no-gguf-route]
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import ENV, FIXTURE, PEERS, ROOT, THREADS, calibration, print_table, quality, require_peers, run_tool  # noqa: E402

WORK = ROOT / "build" / "bench-awq"
GGUF_TYPES = ("q4_0", "q4_k_m", "q3_k_m")


def run_ours_inside(args: argparse.Namespace) -> None:
    """The timed qconvert run, in its own process like the peer's."""
    import torch

    from qconvert.awq.config import AWQConfig
    from qconvert.awq.run import quantize_awq
    from qconvert.calib.types import CalibInput
    from qconvert.layerwise.session import RunOptions, open_session, parse_compute_dtype

    torch.set_num_threads(args.threads)
    config = AWQConfig(bits=args.bits, group_size=args.group_size, zero_point=args.zero_point)
    options = RunOptions(device=args.device, threads=args.threads, force=True, progress=False, dtype=parse_compute_dtype(args.dtype, args.device))
    layers = json.loads((args.model / "config.json").read_text())["num_hidden_layers"]
    open_session(args.model, options)  # imports and tokenizer warm, as the peer's model is loaded before its clock starts
    start, cpu_start = time.perf_counter(), time.process_time()
    quantize_awq(args.model, args.out, CalibInput(file=args.calib), config, options)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    result = {"tool": f"qconvert ({args.dtype})", "seconds_total": seconds, "seconds_per_layer": seconds / layers, "cpu_seconds_per_layer": cpu / layers, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    args.json.write_text(json.dumps(result))


def quantize(tool: str, model: Path, calib: Path, group_size: int, tag: str, device: str) -> tuple[dict, Path]:
    """Runs one tool; returns its result and the folder `qconvert ppl` can measure."""
    out = WORK / "out" / tag
    common = ["--model", model, "--calib", calib, "--bits", 4, "--group-size", group_size, "--threads", THREADS, "--json", out.with_suffix(".json")]
    if tool in PEERS:
        cmd = [PEERS[tool], ROOT / "scripts" / "peers" / "run_peer_awq.py", *common, "--out", out / "checkpoint", "--dense-out", out / "dense"]
        return run_tool(cmd, out, WORK), out / "dense"
    cmd = [sys.executable, __file__, "--inside", *common, "--dtype", tool.split(":")[1], "--device", device, "--out", out]
    return run_tool(cmd, out, WORK), out


def rtn_dense(source: Path, group_size: int, out: Path) -> Path:
    from qconvert.awq.grid import fake_quantize
    from tests.variants import fake_quantized_copy

    return fake_quantized_copy(source, out, lambda w: fake_quantize(w, 4, group_size, zero_point=True))


def make_model(layers: int) -> Path:
    """SmolLM2-135M's shapes: hidden 576, ffn 1536, 9 heads over 3 KV heads, tied embeddings."""
    from tests.gptq.models import make_random_llama

    model = WORK / f"smol576-{layers}l"
    if not (model / "config.json").exists():
        make_random_llama(model, hidden=576, intermediate=1536, layers=layers, heads=9, kv_heads=3, tied=True)
    return model


def cli(*args: object) -> None:
    subprocess.run([sys.executable, "-m", "qconvert", *map(str, args)], check=True, env=ENV, capture_output=True)


def outlier_variant() -> Path:
    """The fixture with real-model activation outliers (tests/awq/models.py)."""
    from tests.awq.models import make_outlier_variant

    outliers = WORK / "fixture-outliers"
    if not (outliers / "config.json").exists():
        make_outlier_variant(outliers)
    return outliers


def gguf_route(calib: Path) -> None:
    scalings = {"AWQ, llama.cpp's quantizer (--gguf-type)": ["--gguf-type", "{t}"], "AWQ, AutoAWQ grid, no clip": ["--export-compatible", "--no-clip", "{grid}"], "AWQ, AutoAWQ grid, clip": ["--export-compatible", "--clip", "{grid}"]}
    print("\n| model | GGUF type | weights | KLD vs f16 | change | ppl |")
    print("|---|---|---|---|---|---|")
    for model in (FIXTURE, outlier_variant()):
        base = WORK / "gguf" / f"{model.name}-f16.gguf"
        base.parent.mkdir(parents=True, exist_ok=True)
        cli("gguf", model, "-o", base, "--force")
        for file_type in GGUF_TYPES:
            from qconvert.awq.run import gguf_search_grid

            _, bits, group_size, zero_point = gguf_search_grid(model, file_type)
            grid = ["--bits", bits, "--group-size", group_size, "--zero-point" if zero_point else "--no-zero-point"]
            plain = WORK / "gguf" / f"{model.name}-{file_type}.gguf"
            cli("gguf", model, "-o", plain, "--type", file_type, "--force")
            q = quality(plain, base)
            print(f"| {model.name} | {file_type} | unscaled | {q['kld_mean']:.2e} | | {q['ppl']:.3f} |", flush=True)
            for label, flags in scalings.items():
                args = [str(f).replace("{t}", file_type) for f in flags if f != "{grid}"] + (grid if "{grid}" in flags else [])
                scaled = WORK / "gguf" / f"{model.name}-awq-{file_type}-{len(label)}"
                cli("awq", model, "--calib", calib, *args, "-o", scaled, "--force")
                cli("gguf", scaled, "-o", scaled.with_suffix(".gguf"), "--type", file_type, "--force")
                s = quality(scaled.with_suffix(".gguf"), base)
                print(f"| {model.name} | {file_type} | {label} | {s['kld_mean']:.2e} | {s['kld_mean'] / q['kld_mean'] - 1:+.0%} | {s['ppl']:.3f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", type=Path)
    p.add_argument("--calib", type=Path)
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--group-size", type=int, default=64)
    p.add_argument("--zero-point", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--threads", type=int, default=THREADS)
    p.add_argument("--device", default="cpu", help="qconvert's device (cpu or cuda); the peer's runner is CPU-only")
    p.add_argument("--out", type=Path)
    p.add_argument("--json", type=Path)
    p.add_argument("--layers", type=int, default=4, help="decoder layers of the random SmolLM2-shaped model")
    p.add_argument("--n-samples", type=int, default=128)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--gguf-route", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args()
    if args.inside:
        return run_ours_inside(args)

    require_peers("llmcompressor")
    WORK.mkdir(parents=True, exist_ok=True)
    calib = calibration(WORK, args.n_samples, args.seqlen)
    rows = []
    # W4 g64 with a zero point: llm-compressor's W4A16_ASYM, and a group size 576 allows
    trained = (FIXTURE, outlier_variant())
    for model in (*trained, make_model(args.layers)):
        setting = "W4 g64 zero point"
        if model in trained:
            rows.append((model.name, setting, "round-to-nearest", {}, quality(rtn_dense(model, 64, WORK / "out" / f"rtn-{model.name}"), model)))
        for tool in ("qconvert:auto", "qconvert:float32", "llmcompressor"):
            result, measured = quantize(tool, model, calib, 64, f"{model.name}-{tool.replace(':', '-')}", args.device)
            q = quality(measured, model) if model in trained and "error" not in result else {}
            rows.append((model.name, setting, result.get("tool", tool) if "error" not in result else tool, result, q))
            print(rows[-1], flush=True)
    print_table(rows, calib, "qconvert (auto)")
    if args.gguf_route:
        gguf_route(calib)


if __name__ == "__main__":
    main()
