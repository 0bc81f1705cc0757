"""GGUF files from qconvert's GPTQ-inside-the-blocks stack against llama.cpp's imatrix route, at the
same type and the same size: KL divergence from the f16 GGUF (mean, median, 99th percentile),
same-top-token rate and perplexity on the held-out text, all by the bundled llama-perplexity; and
the time and peak RSS of each route.

Routes, each from the same calibration tokens (qconvert's calibration windows decoded to text for
llama-imatrix, that text tokenized again for qconvert, as tests/imatrix/test_quality.py does):
  imatrix   llama-imatrix, then llama-quantize --imatrix (llama.cpp's best)
  gptq      qconvert gguf --gptq
  awq       qconvert gguf --awq-scale (then qconvert's importance matrix on the scaled model)
  awq+gptq  qconvert gguf --awq-scale --gptq

    python scripts/bench_blockq.py [--models tiny-qwen2 tiny-llama] [--types q4_0 ...] [--speed-layers 4]
"""

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from bench_common import EVAL_TEXT, ROOT, THREADS

from qconvert.llama_cpp import find_tool

WORK = ROOT / "build" / "bench-blockq"
MODELS = {"tiny-qwen2": ROOT / "tests" / "fixtures" / "tiny-qwen2", "tiny-llama": ROOT / "tests" / "fixtures" / "tiny-llama"}
# The fixture with real models' activation statistics (every input channel spread log-normally, the
# function unchanged: tests/awq/models.py), made on demand: where AWQ's scaling has something to do.
VARIANTS = {"tiny-qwen2-spread": "make_spread_variant"}
TYPES = ["q2_k", "q3_k_m", "q4_0", "q4_k_m", "q5_k_m", "q6_k"]
ROUTES = {"imatrix": (), "gptq": ("--gptq",), "awq": ("--awq-scale",), "awq+gptq": ("--awq-scale", "--gptq")}
CTX = 256  # calibration window and evaluation chunk
N_SAMPLES = 64
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
_KLD = {key: re.compile(rf"{label}\s*KLD:\s*([0-9.eE+-]+)") for key, label in (("mean", "Mean"), ("median", "Median"), ("p99", r"99\.0%"))}
_SAME_TOP = re.compile(r"Same top p:\s*([0-9.]+)")
_PPL_Q = re.compile(r"Mean PPL\(Q\)\s*:\s*([0-9.]+)")


def timed(cmd: list, log: Path) -> tuple[float, float]:
    """Run cmd; (wall seconds, peak RSS MiB of that process)."""
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, env=ENV)
        _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        sys.exit(f"failed ({status}): {' '.join(map(str, cmd))}; see {log}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def qconvert(*args: object) -> list[str]:
    return [sys.executable, "-m", "qconvert", *map(str, args)]


def same_tokens(model: Path, work: Path) -> tuple[Path, Path, int]:
    """The calibration windows as text (for llama-imatrix) and that text tokenized again, cut as llama-imatrix cuts it."""
    import torch
    from transformers import AutoTokenizer

    from qconvert.calib.store import CalibrationSet, read_calibration, write_calibration

    raw, text, tokens = work / "calib-raw.safetensors", work / "calib.txt", work / "calib.safetensors"
    if not tokens.exists():
        subprocess.run(qconvert("calib", model, "-o", raw, "--n-samples", N_SAMPLES, "--seqlen", CTX, "--force"), check=True, capture_output=True)
        tokenizer = AutoTokenizer.from_pretrained(model)
        calib = read_calibration(raw)
        text.write_text("".join(tokenizer.decode(row, skip_special_tokens=True) for row in calib.input_ids.tolist()))
        ids = tokenizer(text.read_text(), add_special_tokens=False)["input_ids"]
        chunks = min(calib.n_samples, len(ids) // CTX)
        windows = torch.tensor(ids[: chunks * CTX]).reshape(chunks, CTX)
        manifest = replace(calib.manifest, counts=replace(calib.manifest.counts, samples=chunks))
        write_calibration(CalibrationSet(windows, torch.ones_like(windows), manifest), tokens, force=True)
    from qconvert.calib.store import read_calibration as read

    return text, tokens, read(tokens).n_samples


def kld(gguf: Path, base_logits: Path, log: Path) -> dict:
    subprocess.run(
        [str(c) for c in [find_tool("llama-perplexity"), "-m", gguf, "--kl-divergence-base", base_logits, "--kl-divergence", "-c", CTX, "-b", CTX, "-t", THREADS]],
        stdout=open(log, "w"), stderr=subprocess.STDOUT, check=True, env=ENV,
    )
    out = log.read_text()
    result = {key: float(p.search(out).group(1)) for key, p in _KLD.items()}
    result["same_top"] = float(_SAME_TOP.search(out).group(1))
    result["ppl"] = float(_PPL_Q.search(out).group(1))
    return result


def quality_rows(name: str, model: Path, types: list[str]) -> list[dict]:
    work = WORK / name
    work.mkdir(parents=True, exist_ok=True)
    text, tokens, chunks = same_tokens(model, work)
    f16, base_logits, imatrix = work / "f16.gguf", work / "f16.kld", work / "llama-imatrix.gguf"
    timed(qconvert("gguf", model, "--type", "f16", "-o", f16, "--force"), work / "f16.log")
    subprocess.run([str(c) for c in [find_tool("llama-perplexity"), "-m", f16, "-f", EVAL_TEXT, "--kl-divergence-base", base_logits, "-c", CTX, "-b", CTX, "-t", THREADS]], check=True, capture_output=True, env=ENV)
    imatrix_s, imatrix_rss = timed([find_tool("llama-imatrix"), "-m", f16, "-f", text, "-o", imatrix, "-c", CTX, "-b", CTX, "--chunks", chunks, "-t", THREADS, "--no-ppl"], work / "imatrix.log")
    rows = []
    for file_type in types:
        for route, flags in ROUTES.items():
            out = work / f"{file_type}-{route}.gguf"
            log = work / f"{file_type}-{route}.log"
            if route == "imatrix":
                seconds, rss = timed([find_tool("llama-quantize"), "--imatrix", imatrix, f16, out, file_type.upper(), THREADS], log)
                seconds, rss = seconds + imatrix_s, max(rss, imatrix_rss)
            else:
                seconds, rss = timed(qconvert("gguf", model, "--type", file_type, "--calib", tokens, *flags, "-o", out, "--force", "--threads", THREADS), log)
            rows.append({"model": name, "type": file_type, "route": route, "mib": out.stat().st_size / 2**20, "seconds": seconds, "rss": rss, **kld(out, base_logits, work / f"{file_type}-{route}.kld.log")})
            print(rows[-1], flush=True)
    return rows


def layers_only_rows(name: str, model: Path, types: list[str]) -> list[dict]:
    """The same routes with the embeddings and the output matrix kept at f16 in every file: what the
    rounding of the decoder layers alone costs. (llama.cpp has no importance for the embeddings, so
    both routes quantize them alike; on the small fixtures they carry much of the divergence.)"""
    import qconvert.convert.hf_to_gguf as hf_to_gguf
    from qconvert.calib.types import CalibInput
    from qconvert.ggml_types import GGMLQuantizationType
    from qconvert.quant.file_types import parse_file_type

    work = WORK / name
    text, tokens, _ = same_tokens(model, work)
    rule = hf_to_gguf.tensor_type

    def f16_outside_layers(tensor, shape, source, file_type, shape_info, has_imatrix=False):
        if tensor in ("token_embd.weight", "output.weight"):
            return GGMLQuantizationType.F16
        return rule(tensor, shape, source, file_type, shape_info, has_imatrix)

    rows = []
    hf_to_gguf.tensor_type = f16_outside_layers
    try:
        for file_type in types:
            for route, flags in ROUTES.items():
                out = work / f"{file_type}-{route}-layers.gguf"
                if route == "imatrix":
                    subprocess.run([str(c) for c in [find_tool("llama-quantize"), "--imatrix", work / "llama-imatrix.gguf", "--token-embedding-type", "f16", "--output-tensor-type", "f16", work / "f16.gguf", out, file_type.upper(), THREADS]], check=True, capture_output=True)
                else:
                    options = hf_to_gguf.ConvertOptions(file_type=parse_file_type(file_type), force=True, progress=False, threads=THREADS, calib=CalibInput(file=tokens), gptq="--gptq" in flags, awq_scale="--awq-scale" in flags)
                    hf_to_gguf.convert_hf_to_gguf(model, out, options)
                rows.append({"model": name, "type": file_type, "route": route, **kld(out, work / "f16.kld", work / f"{file_type}-{route}-layers.kld.log")})
                print(rows[-1], flush=True)
    finally:
        hf_to_gguf.tensor_type = rule
    return rows


def print_layers_only(rows: list[dict]) -> None:
    print("\ndecoder layers only (embeddings and output matrix f16 in every file): mean KLD, and against the imatrix route")
    print("| model | type | imatrix | gptq | awq | awq+gptq |")
    print("|---|---|---|---|---|---|")
    cells: dict[tuple[str, str], dict[str, float]] = {}
    for r in rows:
        cells.setdefault((r["model"], r["type"]), {})[r["route"]] = r["mean"]
    for (model, file_type), by_route in cells.items():
        ref = by_route["imatrix"]
        parts = [f"{ref:.2e}"] + [f"{by_route[route]:.2e} ({100 * (by_route[route] / ref - 1):+.0f}%)" for route in list(ROUTES)[1:]]
        print(f"| {model} | {file_type} | {' | '.join(parts)} |")


def print_quality(rows: list[dict]) -> None:
    print(f"\ncalibration: {N_SAMPLES} × {CTX} tokens of the bundled set; KLD from the f16 GGUF on {EVAL_TEXT.name} by llama-perplexity (ctx {CTX})")
    print("| model | type | route | MiB | mean KLD | vs imatrix | median KLD | 99% KLD | same top % | PPL | time s | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    base = {(r["model"], r["type"]): r for r in rows if r["route"] == "imatrix"}
    for r in rows:
        ref = base[(r["model"], r["type"])]
        change = "" if r["route"] == "imatrix" else f"{100 * (r['mean'] / ref['mean'] - 1):+.0f}%"
        print(
            f"| {r['model']} | {r['type']} | {r['route']} | {r['mib']:.2f} | {r['mean']:.2e} | {change} | {r['median']:.2e} | {r['p99']:.2e} | {r['same_top']:.1f} | {r['ppl']:.3f} | {r['seconds']:.1f} | {r['rss']:.0f} |"
        )


def speed(layers: int, file_type: str) -> None:
    """Time and peak RSS on a SmolLM2-shaped model (random weights): llama.cpp's imatrix route
    (llama-imatrix + llama-quantize) against `qconvert gguf --gptq`, from the same tokens."""
    sys.path.insert(0, str(ROOT))
    from tests.quant.random_models import SMOLLM2, make_llama

    work = WORK / f"speed-smollm2-{layers}"
    work.mkdir(parents=True, exist_ok=True)
    model = work / "hf"
    if not model.exists():
        make_llama(model, SMOLLM2.with_layers(layers))
    text, tokens, chunks = same_tokens(model, work)
    f16, imatrix = work / "f16.gguf", work / "imatrix.gguf"
    # llama.cpp's own converter (scripts/reference_convert.py), as a user of the imatrix route runs it
    convert_s, convert_rss = timed([sys.executable, ROOT / "scripts" / "reference_convert.py", model, "--outtype", "f16", "--outfile", f16], work / "f16.log")
    im_s, im_rss = timed([find_tool("llama-imatrix"), "-m", f16, "-f", text, "-o", imatrix, "-c", CTX, "-b", CTX, "--chunks", chunks, "-t", THREADS, "--no-ppl"], work / "imatrix.log")
    q_s, q_rss = timed([find_tool("llama-quantize"), "--imatrix", imatrix, f16, work / "ref.gguf", file_type.upper(), THREADS], work / "quantize.log")
    ours_s, ours_rss = timed(qconvert("gguf", model, "--type", file_type, "--calib", tokens, "--gptq", "-o", work / "ours.gguf", "--force", "--threads", THREADS), work / "ours.log")
    ref_s = convert_s + im_s + q_s
    print(f"\nSmolLM2-shaped, {layers} layers, random weights, {file_type}, {chunks} × {CTX} calibration tokens, {THREADS} threads")
    print("| route | wall s | × llama.cpp | peak RSS MiB |")
    print("|---|---|---|---|")
    print(f"| llama.cpp: convert_hf_to_gguf.py + llama-imatrix + llama-quantize | {ref_s:.1f} ({convert_s:.1f} + {im_s:.1f} + {q_s:.1f}) | 1.0 | {max(convert_rss, im_rss, q_rss):.0f} |")
    print(f"| qconvert gguf --gptq | {ours_s:.1f} | {ours_s / ref_s:.2f} | {ours_rss:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=[*MODELS, *VARIANTS])
    parser.add_argument("--types", nargs="*", default=TYPES)
    parser.add_argument("--speed-layers", type=int, default=4, help="layers of the SmolLM2-shaped speed model (0: skip)")
    parser.add_argument("--no-layers-only", action="store_true", help="skip the decoder-layers-only table")
    args = parser.parse_args()
    rows, layer_rows = [], []
    for name in args.models:
        if name in VARIANTS and not (WORK / name / "hf").exists():
            sys.path.insert(0, str(ROOT))
            import tests.awq.models as variants

            (WORK / name).mkdir(parents=True, exist_ok=True)
            getattr(variants, VARIANTS[name])(WORK / name / "hf")
        MODELS.setdefault(name, WORK / name / "hf")
        rows += quality_rows(name, MODELS[name], args.types)
        if not args.no_layers_only:
            layer_rows += layers_only_rows(name, MODELS[name], args.types)
    if rows:
        print_quality(rows)
    if layer_rows:
        print_layers_only(layer_rows)
    if args.speed_layers:
        speed(args.speed_layers, "q4_k_m")


if __name__ == "__main__":
    main()
