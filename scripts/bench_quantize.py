"""`make bench-quantize`: qconvert's GGUF quantizer against llama.cpp's, on the same machine, in the same run.

1. Two random-weight fp16 checkpoints (tests/quant/random_models.py) and their f16 GGUFs: a
   Llama-shaped bench model (~300M parameters, 600 MiB) and one of SmolLM2-135M's shapes (hidden
   576, ffn 1536, vocab 49152, 30 layers, ~270 MiB), where most tensors fall back to legacy types.
2. For every file type, on both: `qconvert quantize` and `llama-quantize` on the same f16 GGUF, same
   thread count, several runs each; the median wall time and the peak RSS of each, their ratios,
   and a byte comparison of the tensor data.
3. Where the time of one q8_0 and one q4_k_m run goes: interpreter start-up, imports, planning, the
   header, and the engine's read, widen, quantize and write (thread-seconds over its workers).
4. Optional (--one-step): the one-step route `qconvert gguf MODEL_DIR --type q4_k_m` against
   llama.cpp's two steps (convert_hf_to_gguf.py --outtype f16, then llama-quantize).
5. Optional (--imatrix-chunks N): `qconvert imatrix` against `llama-imatrix` over N × 512 tokens of
   the held-out text, then every file type quantized with llama-imatrix's file by both, as in 2.

    python scripts/bench_quantize.py [--runs 3] [--threads 2] [--models bench,smollm2] [--types q4_k_m,q8_0]
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qconvert.llama_cpp import find_tool  # noqa: E402
from qconvert.quant.file_types import FileType  # noqa: E402
from tests.quant.gguf_compare import differences  # noqa: E402
from tests.quant.random_models import BENCH, SMOLLM2, make_llama  # noqa: E402

EVAL_TEXT = ROOT / "calibration" / "eval" / "heldout-en.txt"
QCONVERT = [sys.executable, "-m", "qconvert"]
TIME = shutil.which("time") or "/usr/bin/time"  # GNU time (Debian package `time`)


def timed(cmd: list) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one run of `cmd`, under GNU time: the RSS of a child
    forked from this (large) Python process would count this process's pages too. GNU time writes
    to its own file: the tools' stderr is theirs."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        start = time.perf_counter()
        proc = subprocess.run([TIME, "-f", "%M", "-o", rss.name, *map(str, cmd)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{proc.stderr[-2000:]}")
        return elapsed, int(rss.read().strip().splitlines()[-1]) / 1024


def median_of(runs: int, make_cmd) -> tuple[float, float]:
    """(median wall seconds, largest peak RSS in MiB) over `runs` runs."""
    results = [timed(make_cmd()) for _ in range(runs)]
    return statistics.median(r[0] for r in results), max(r[1] for r in results)


def quantize_table(args, work: Path, f16: Path, imatrix: Path | None = None) -> None:
    """Every type by both quantizers from the same f16 GGUF (and importance matrix), with a byte check."""
    quantize = find_tool("llama-quantize")
    t = str(args.threads)
    flags = ["--imatrix", imatrix] if imatrix else []
    print("\n| type | qconvert s | llama-quantize s | ratio | qconvert peak RSS MiB | llama-quantize peak RSS MiB | RSS ratio |")
    print("|---|---|---|---|---|---|---|")
    for name in args.types.split(","):
        ours_out, theirs_out = work / f"ours-{name}.gguf", work / f"theirs-{name}.gguf"
        ours = median_of(args.runs, lambda: [*QCONVERT, "quantize", f16, ours_out, name, "--threads", t, "--force", *flags])
        theirs = median_of(args.runs, lambda: [quantize, *flags, f16, theirs_out, name.upper(), t])
        same = "" if not differences(ours_out, theirs_out) else "  (DATA DIFFERS)"
        print(f"| {name} | {ours[0]:.2f} | {theirs[0]:.2f} | {ours[0] / theirs[0]:.2f} | {ours[1]:.0f} | {theirs[1]:.0f} | {ours[1] / theirs[1]:.2f} |{same}", flush=True)
        ours_out.unlink()
        theirs_out.unlink()


def imatrix_section(args, work: Path, model: Path, f16: Path) -> Path:
    """qconvert imatrix against llama-imatrix over the same number of tokens of the same text, same
    threads; returns llama-imatrix's file."""
    t, ctx = str(args.threads), 512
    calib = work / "imatrix-calib.safetensors"
    subprocess.run([*QCONVERT, "calib", model, "--source", EVAL_TEXT, "--n-samples", str(args.imatrix_chunks), "--seqlen", str(ctx), "-o", calib, "--force"], check=True, stdout=subprocess.DEVNULL)
    theirs, ours = work / "imatrix-llama.gguf", work / "imatrix-qconvert.gguf"
    theirs_s = median_of(args.runs, lambda: [find_tool("llama-imatrix"), "-m", f16, "-f", EVAL_TEXT, "-o", theirs, "-c", ctx, "-b", ctx, "--chunks", args.imatrix_chunks, "-t", t, "--no-ppl"])
    ours_s = median_of(args.runs, lambda: [*QCONVERT, "imatrix", model, "--calib", calib, "-o", ours, "--threads", t, "--force"])
    print(
        f"\nimportance matrix, {args.imatrix_chunks} × {ctx} tokens: qconvert imatrix {ours_s[0]:.2f} s (peak {ours_s[1]:.0f} MiB) vs "
        f"llama-imatrix {theirs_s[0]:.2f} s (peak {theirs_s[1]:.0f} MiB); ratio {ours_s[0] / theirs_s[0]:.2f}"
    )
    return theirs


# One quantize_gguf run in a fresh interpreter, timing its imports (the CLI's) and returning the
# library's own account of the rest as JSON.
PROFILE_CODE = """
import time
t0 = time.perf_counter()
import json, sys
from pathlib import Path
import qconvert.cli
from qconvert.quant.file_types import FileType
from qconvert.quant.gguf_quantize import QuantizeOptions, quantize_gguf
t1 = time.perf_counter()
src, dst, file_type, threads = sys.argv[1:]
result = quantize_gguf(Path(src), Path(dst), QuantizeOptions(FileType(file_type), force=True, progress=False, threads=int(threads)))
print(json.dumps({"imports": t1 - t0, "in_process": time.perf_counter() - t0, **result.seconds}))
"""
PHASES = [
    ("interpreter start-up and exit", "startup"),
    ("imports (CLI, numpy, gguf, qconvert)", "imports"),
    ("header read and planning", "plan"),
    ("output header written", "header"),
    ("engine, wall", "engine"),
    ("  read (thread-s)", "read"),
    ("  widen f16 and check (thread-s)", "widen"),
    ("  quantize (thread-s)", "quantize"),
    ("  write (thread-s)", "write"),
    ("total, wall", "wall"),
]


def profile(args, work: Path, f16: Path, types: tuple[str, ...] = ("q8_0", "q4_k_m")) -> None:
    """Where the time of one run of each type goes (the median run of args.runs by wall time)."""
    columns = {}
    for name in types:
        runs = []
        for _ in range(args.runs):
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", PROFILE_CODE, f16, work / f"profile-{name}.gguf", name, str(args.threads)], capture_output=True, text=True, check=True)
            wall = time.perf_counter() - start
            seconds = json.loads(proc.stdout)
            runs.append({**seconds, "wall": wall, "startup": wall - seconds["in_process"]})
        columns[name] = sorted(runs, key=lambda r: r["wall"])[len(runs) // 2]
        (work / f"profile-{name}.gguf").unlink()
    print(f"\nwhere the time goes, {f16.name}, {args.threads} threads (seconds; thread-s: summed over the engine's workers)")
    print("| phase | " + " | ".join(types) + " |")
    print("|---|" + "---|" * len(types))
    for label, key in PHASES:
        print(f"| {label} | " + " | ".join(f"{columns[name][key]:.3f}" for name in types) + " |")


MODELS = {"bench": BENCH, "smollm2": SMOLLM2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="bench,smollm2", help=f"comma-separated, of {', '.join(MODELS)}")
    ap.add_argument("--types", default=",".join(t.value for t in FileType if t not in (FileType.F32, FileType.F16, FileType.BF16)))
    ap.add_argument("--workdir", type=Path, default=ROOT / "build" / "bench")
    ap.add_argument("--profile-types", default="q8_0,q4_k_m", help="the types of section 3")
    ap.add_argument("--one-step", action="store_true", help="also section 4, on the first model")
    ap.add_argument("--imatrix-chunks", type=int, default=0, help="512-token chunks for section 5, on the first model (0: skip it)")
    args = ap.parse_args()

    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    for i, key in enumerate(args.models.split(",")):
        shape = MODELS[key]
        model = make_llama(work / key, shape)
        f16 = work / f"{key}-f16.gguf"
        subprocess.run([*QCONVERT, "gguf", model, "-o", f16], check=True, stdout=subprocess.DEVNULL)
        print(
            f"\nmodel {key}: random Llama, hidden {shape.hidden}, {shape.layers} layers, ffn {shape.ffn}, vocab {shape.vocab}"
            f"{', tied embeddings' if shape.tied else ''}; f16 GGUF {f16.stat().st_size / 2**20:.0f} MiB; threads {args.threads}; "
            f"median of {args.runs} (time), max of {args.runs} (RSS)"
        )
        quantize_table(args, work, f16)
        profile(args, work, f16, tuple(args.profile_types.split(",")))
        if i == 0 and args.one_step:
            one_step(args, work, model)
        if i == 0 and args.imatrix_chunks:
            imatrix = imatrix_section(args, work, model, f16)
            print("\nwith llama-imatrix's importance matrix:")
            quantize_table(args, work, f16, imatrix)


def one_step(args, work: Path, model: Path) -> None:
    """One step (HF → q4_k_m) against llama.cpp's two steps."""
    quantize = find_tool("llama-quantize")
    t = str(args.threads)
    one = work / "one-step-q4_k_m.gguf"
    two_f16, two = work / "two-step-f16.gguf", work / "two-step-q4_k_m.gguf"
    ours_s = median_of(args.runs, lambda: [*QCONVERT, "gguf", model, "--type", "q4_k_m", "-o", one, "--threads", t, "--force"])
    convert_s = median_of(args.runs, lambda: [sys.executable, ROOT / "scripts" / "reference_convert.py", model, "--outtype", "f16", "--outfile", two_f16])
    quant_s = median_of(args.runs, lambda: [quantize, two_f16, two, "Q4_K_M", t])
    identical = not differences(one, two)
    total = convert_s[0] + quant_s[0]
    print(
        f"\none step, HF → q4_k_m: qconvert gguf {ours_s[0]:.2f} s (peak {ours_s[1]:.0f} MiB) vs convert_hf_to_gguf.py {convert_s[0]:.2f} s "
        f"(peak {convert_s[1]:.0f} MiB) + llama-quantize {quant_s[0]:.2f} s = {total:.2f} s; ratio {ours_s[0] / total:.2f}; "
        f"tensor data {'byte-identical' if identical else 'DIFFERENT'}"
    )


if __name__ == "__main__":
    main()
