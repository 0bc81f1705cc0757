"""`make bench`: qconvert's GGUF quantizer against llama.cpp's, on the same machine, in the same run.

1. A random-weight Llama-shaped fp16 checkpoint (~100M parameters by default) and its f16 GGUF.
2. For every file type: `qconvert quantize` and `llama-quantize` on that f16 GGUF, same thread
   count, several runs each; the best wall time and the peak RSS of each, and their ratios.
3. The one-step route `qconvert gguf MODEL_DIR --type q4_k_m` against llama.cpp's two steps
   (convert_hf_to_gguf.py --outtype f16, then llama-quantize), with a byte comparison of the data.
4. With an importance matrix: `qconvert imatrix` against `llama-imatrix` over the same number of
   tokens of the held-out text (--imatrix-chunks × 512), same threads; then every file type
   quantized with llama-imatrix's file by both quantizers, as in 2.

    python scripts/bench_quantize.py [--runs 3] [--threads 2] [--hidden 1024 --layers 8] [--types q4_k_m,q8_0]
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qconvert.llama_cpp import find_tool  # noqa: E402
from qconvert.quant.file_types import FileType  # noqa: E402
from tests.quant.gguf_compare import differences  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "tiny-qwen2"
EVAL_TEXT = ROOT / "calibration" / "eval" / "heldout-en.txt"
QCONVERT = [sys.executable, "-m", "qconvert"]
TIME = shutil.which("time") or "/usr/bin/time"  # GNU time (Debian package `time`)


def make_model(out: Path, hidden: int, layers: int, ffn: int, heads: int, kv_heads: int, vocab: int) -> Path:
    """Random N(0, 0.02) fp16 weights in a LlamaForCausalLM layout, with the fixture's tokenizer
    (its 4,000 tokens padded to `vocab` embedding rows)."""
    rng = np.random.default_rng(0)
    head_dim = hidden // heads

    def w(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)

    tensors = {"model.embed_tokens.weight": w(vocab, hidden), "lm_head.weight": w(vocab, hidden), "model.norm.weight": np.ones(hidden, np.float16)}
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors |= {
            p + "input_layernorm.weight": np.ones(hidden, np.float16),
            p + "post_attention_layernorm.weight": np.ones(hidden, np.float16),
            p + "self_attn.q_proj.weight": w(heads * head_dim, hidden),
            p + "self_attn.k_proj.weight": w(kv_heads * head_dim, hidden),
            p + "self_attn.v_proj.weight": w(kv_heads * head_dim, hidden),
            p + "self_attn.o_proj.weight": w(hidden, heads * head_dim),
            p + "mlp.gate_proj.weight": w(ffn, hidden),
            p + "mlp.up_proj.weight": w(ffn, hidden),
            p + "mlp.down_proj.weight": w(hidden, ffn),
        }
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out / "model.safetensors")
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": ffn,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "eos_token_id": 3997,
    }
    (out / "config.json").write_text(json.dumps(config, indent=1))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(FIXTURE / name, out / name)
    return out


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


def best_of(runs: int, make_cmd) -> tuple[float, float]:
    results = [timed(make_cmd()) for _ in range(runs)]
    return min(r[0] for r in results), max(r[1] for r in results)


def quantize_table(args, work: Path, f16: Path, imatrix: Path | None = None) -> None:
    """Every type by both quantizers from the same f16 GGUF (and importance matrix), with a byte check."""
    quantize = find_tool("llama-quantize")
    t = str(args.threads)
    flags = ["--imatrix", imatrix] if imatrix else []
    print("\n| type | qconvert s | llama-quantize s | ratio | qconvert peak RSS MiB | llama-quantize peak RSS MiB | RSS ratio |")
    print("|---|---|---|---|---|---|---|")
    for name in args.types.split(","):
        ours_out, theirs_out = work / f"ours-{name}.gguf", work / f"theirs-{name}.gguf"
        ours = best_of(args.runs, lambda: [*QCONVERT, "quantize", f16, ours_out, name, "--threads", t, "--force", *flags])
        theirs = best_of(args.runs, lambda: [quantize, *flags, f16, theirs_out, name.upper(), t])
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
    theirs_s = best_of(args.runs, lambda: [find_tool("llama-imatrix"), "-m", f16, "-f", EVAL_TEXT, "-o", theirs, "-c", ctx, "-b", ctx, "--chunks", args.imatrix_chunks, "-t", t, "--no-ppl"])
    ours_s = best_of(args.runs, lambda: [*QCONVERT, "imatrix", model, "--calib", calib, "-o", ours, "--threads", t, "--force"])
    print(
        f"\nimportance matrix, {args.imatrix_chunks} × {ctx} tokens: qconvert imatrix {ours_s[0]:.2f} s (peak {ours_s[1]:.0f} MiB) vs "
        f"llama-imatrix {theirs_s[0]:.2f} s (peak {theirs_s[1]:.0f} MiB); ratio {ours_s[0] / theirs_s[0]:.2f}"
    )
    return theirs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    # Default: about 300M parameters (600 MiB of f16), the scale of the smallest real LLMs.
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--ffn", type=int, default=4096)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--types", default=",".join(t.value for t in FileType if t not in (FileType.F32, FileType.F16, FileType.BF16)))
    ap.add_argument("--workdir", type=Path, default=ROOT / "build" / "bench")
    ap.add_argument("--imatrix-chunks", type=int, default=8, help="512-token chunks for the importance-matrix comparison (0: skip it)")
    ap.add_argument("--imatrix-only", action="store_true", help="only section 4")
    args = ap.parse_args()

    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    model = make_model(work / "model", args.hidden, args.layers, args.ffn, heads=args.hidden // 64, kv_heads=max(1, args.hidden // 256), vocab=args.vocab)
    f16 = work / "model-f16.gguf"
    subprocess.run([*QCONVERT, "gguf", model, "-o", f16], check=True, stdout=subprocess.DEVNULL)
    size_mb = f16.stat().st_size / 2**20
    t = str(args.threads)

    print(
        f"\nmodel: random Llama, hidden {args.hidden}, {args.layers} layers, ffn {args.ffn}, vocab {args.vocab}; "
        f"f16 GGUF {size_mb:.0f} MiB; threads {t}; best of {args.runs} (time), max of {args.runs} (RSS)"
    )
    if not args.imatrix_only:
        plain_and_one_step(args, work, model, f16)
    if args.imatrix_chunks:
        imatrix = imatrix_section(args, work, model, f16)
        print("\nwith llama-imatrix's importance matrix:")
        quantize_table(args, work, f16, imatrix)


def plain_and_one_step(args, work: Path, model: Path, f16: Path) -> None:
    quantize = find_tool("llama-quantize")
    t = str(args.threads)
    quantize_table(args, work, f16)

    # One step (HF → q4_k_m) against llama.cpp's two steps.
    one = work / "one-step-q4_k_m.gguf"
    two_f16, two = work / "two-step-f16.gguf", work / "two-step-q4_k_m.gguf"
    ours_s = best_of(args.runs, lambda: [*QCONVERT, "gguf", model, "--type", "q4_k_m", "-o", one, "--threads", t, "--force"])
    convert_s = best_of(args.runs, lambda: [sys.executable, ROOT / "scripts" / "reference_convert.py", model, "--outtype", "f16", "--outfile", two_f16])
    quant_s = best_of(args.runs, lambda: [quantize, two_f16, two, "Q4_K_M", t])
    identical = not differences(one, two)
    total = convert_s[0] + quant_s[0]
    print(
        f"\none step, HF → q4_k_m: qconvert gguf {ours_s[0]:.2f} s (peak {ours_s[1]:.0f} MiB) vs convert_hf_to_gguf.py {convert_s[0]:.2f} s "
        f"(peak {convert_s[1]:.0f} MiB) + llama-quantize {quant_s[0]:.2f} s = {total:.2f} s; ratio {ours_s[0] / total:.2f}; "
        f"tensor data {'byte-identical' if identical else 'DIFFERENT'}"
    )


if __name__ == "__main__":
    main()
