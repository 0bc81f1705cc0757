"""Quantize a model with a peer GPTQ implementation (GPTQModel or llm-compressor) on CPU.

Runs inside that peer's venv (made by setup_peers.sh) and never imports qconvert. It feeds
exactly the tokens of a qconvert calibration file (safetensors, int64 `input_ids` and
`attention_mask`, n x seqlen), times the quantization call, and writes:

  --out        the peer's own checkpoint (GPTQModel: GPTQ format; llm-compressor:
               compressed-tensors pack-quantized);
  --dense-out  a plain HF float32 checkpoint (config.json without quantization_config,
               model.safetensors, tokenizer files) whose Linear weights are the peer's
               dequantized weights, so plain transformers can measure its perplexity;
  --json       tool, version, settings, seconds, seconds per layer, peak RSS, checks, notes.

A quantization the peer refuses (e.g. llm-compressor with a group size that does not divide
the width) is reported as {"error": ...} in the JSON and exit code 2 (traceback on stderr).
Timings need an otherwise idle machine, or OMP_WAIT_POLICY=PASSIVE in the environment (for
every tool compared): with one other busy process on 2 cores, llm-compressor at --threads 2
ran 10-15x slower (OpenMP spin-waiting), and PASSIVE brought it back to its idle time.

    python run_peer_gptq.py --tool gptqmodel --model M --calib C.safetensors --bits 4 \
        --group-size 64 --sym --damp 0.01 --threads 2 --out O --dense-out D --json R.json
"""
import argparse
import json
import os
import resource
import shutil
import sys
import time
import traceback
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja",
                   "generation_config.json")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tool", required=True, choices=["gptqmodel", "llmcompressor"])
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--calib", required=True, type=Path)
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--group-size", type=int, default=128, help="-1: one group per row")
    sym = p.add_mutually_exclusive_group()
    sym.add_argument("--sym", dest="sym", action="store_true", default=True)
    sym.add_argument("--asym", dest="sym", action="store_false")
    p.add_argument("--desc-act", action="store_true",
                   help="activation order (llm-compressor: actorder='weight', static groups)")
    p.add_argument("--damp", type=float, default=0.01)
    p.add_argument("--dtype", default="float32", choices=[*DTYPES, "auto"],
                   help="dtype the model is loaded and run in while quantizing (auto: peer default)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--dense-out", required=True, type=Path)
    p.add_argument("--json", required=True, type=Path)
    return p.parse_args()


def peak_rss_mib():
    kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
              resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return round(kib / 1024, 1)


def original_tensors(model_dir):
    """The model's own tensors (single or sharded safetensors), as float32 where floating."""
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        files = sorted({model_dir / f for f in json.loads(index.read_text())["weight_map"].values()})
    else:
        files = [model_dir / "model.safetensors"]
    out = {}
    for f in files:
        for k, v in load_file(str(f)).items():
            out[k] = v.float() if v.is_floating_point() else v
    return out


def write_dense(model_dir, dense_dir, tensors):
    dense_dir.mkdir(parents=True, exist_ok=True)
    config = json.loads((model_dir / "config.json").read_text())
    config.pop("quantization_config", None)
    config["dtype"] = "float32"
    config.pop("torch_dtype", None)
    (dense_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(dense_dir / "model.safetensors"),
              metadata={"format": "pt"})
    for name in TOKENIZER_FILES:
        if (model_dir / name).exists():
            shutil.copy(model_dir / name, dense_dir / name)


def check_quantized(weights, g_idxs, bits, group_size):
    """Largest number of distinct values in one (row, group) of any dequantized weight."""
    worst = 0
    for name, w in weights.items():
        cols = w.shape[1]
        g = g_idxs.get(name)
        if g is None:
            g = torch.arange(cols) // (group_size if group_size > 0 else cols)
        for grp in torch.unique(g):
            block = w[:, g == grp].sort(dim=1).values
            distinct = 1 + (block[:, 1:] != block[:, :-1]).sum(dim=1)
            worst = max(worst, int(distinct.max()))
    ok = worst <= 2 ** bits
    print(f"quantization check: {len(weights)} Linear weights, at most {worst} distinct values "
          f"per row and group (limit {2 ** bits}): {'OK' if ok else 'FAILED'}")
    return {"n_quantized_weights": len(weights), "max_distinct_per_row_group": worst, "ok": ok}


def unpack_gptq(checkpoint_dir):
    """Dense weights and g_idx of every quantized Linear in a GPTQ checkpoint (bits 2/4/8)."""
    qcfg = json.loads((checkpoint_dir / "config.json").read_text())["quantization_config"]
    bits = qcfg["bits"]
    fmt = qcfg.get("checkpoint_format", qcfg.get("format", "gptq"))
    per_word = 32 // bits
    mask = (1 << bits) - 1
    shifts = torch.arange(0, 32, bits, dtype=torch.int64)
    # GPTQModel writes v1 ("gptq") zeros by subtracting 0x11111111 (4-bit) from each whole int32
    # word, borrows included; adding it back word-wise restores the raw zeros exactly.
    v1_offset = sum(1 << (bits * j) for j in range(per_word)) if fmt == "gptq" else 0
    tensors = {}
    for f in sorted(checkpoint_dir.glob("*.safetensors")):
        with safe_open(str(f), "pt") as sf:
            for k in sf.keys():
                tensors[k] = sf.get_tensor(k)
    weights, g_idxs = {}, {}
    for key in [k for k in tensors if k.endswith(".qweight")]:
        prefix = key[: -len(".qweight")]
        qweight = tensors[key].to(torch.int64) & 0xFFFFFFFF          # [K/per_word, N]
        qzeros = (tensors[prefix + ".qzeros"].to(torch.int64) + v1_offset) & 0xFFFFFFFF
        scales = tensors[prefix + ".scales"].float()                  # [G, N]
        g_idx = tensors[prefix + ".g_idx"].long()                     # [K]
        q = ((qweight[:, None, :] >> shifts[None, :, None]) & mask).reshape(-1, qweight.shape[1])
        z = ((qzeros[:, :, None] >> shifts[None, None, :]) & mask).reshape(qzeros.shape[0], -1)
        w = scales[g_idx] * (q - z[g_idx]).float()                   # [K, N]
        weights[prefix + ".weight"] = w.t().contiguous()
        g_idxs[prefix + ".weight"] = g_idx
    return weights, g_idxs


def run_gptqmodel(a, calib, dtype):
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(a.threads))
    import gptqmodel
    from gptqmodel import GPTQModel, QuantizeConfig
    from gptqmodel.looper import loop_processor
    from gptqmodel.utils.cpp import load_pack_block_extension

    # GPTQModel writes per-run logs to ./logs (the current directory); keep them with --out.
    loop_processor._PROJECT_LOG_DIR = a.out / "logs"
    # Build/load the JIT packing extension (~30 s the first time) outside the timed call.
    packer = load_pack_block_extension() is not None

    qcfg = QuantizeConfig(bits=a.bits, group_size=a.group_size, sym=a.sym, desc_act=a.desc_act,
                          act_group_aware=False, damp_percent=a.damp, true_sequential=True,
                          offload_to_disk=False, device="cpu")
    model = GPTQModel.load(str(a.model), qcfg, dtype=dtype)
    examples = [{"input_ids": ids, "attention_mask": m} for ids, m in zip(*calib)]
    t0, cpu0 = time.perf_counter(), time.process_time()
    model.quantize(examples, batch_size=1)
    seconds = time.perf_counter() - t0
    extra_cpu = time.process_time() - cpu0
    model.save(str(a.out))
    weights, g_idxs = unpack_gptq(a.out)
    settings = {"damp_auto_increment": qcfg.damp_auto_increment, "act_group_aware": False,
                "static_groups": qcfg.static_groups, "true_sequential": True, "mse": qcfg.mse,
                "fallback": str(qcfg.fallback), "format": str(qcfg.format),
                "offload_to_disk": False, "batch_size": 1,
                "cpu_workers": os.environ["GPTQMODEL_CPU_WORKERS"], "pack_block_cpu_ext": packer}
    # GPTQModel's per-module log: solve time, and the damp it ended with (auto-increment).
    log = [line.split(",") for line in (a.out / "quant_log.csv").read_text().splitlines()[1:]]
    solve = {}
    for layer, _module, _loss, _samples, damp, t in log:
        solve[int(layer)] = solve.get(int(layer), 0.0) + float(t)
        if float(damp) != a.damp:
            settings.setdefault("damp_raised", []).append(f"layer {layer} {_module}: {damp}")
    extra = {"cpu_seconds": extra_cpu, "solve_seconds_per_layer": [round(solve[k], 3) for k in sorted(solve)],
             "notes": ["act_group_aware (GAR) turned off to match plain GPTQ; GPTQModel's default "
                       "is on", "GPTQModel's own CPU default dtype is bfloat16 (--dtype auto)",
                       "a failed Cholesky is retried with damp raised by damp_auto_increment",
                       "the timed call includes packing; the JIT packing extension is preloaded",
                       "seconds_per_layer = seconds_total / n_layers; solve_seconds_per_layer "
                       "sums GPTQModel's per-module times (quant_log.csv)"]}
    return gptqmodel.__version__, seconds, settings, weights, g_idxs, extra


def run_llmcompressor(a, calib, dtype):
    import llmcompressor
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.gptq import GPTQModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids, mask = calib
    dataset = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": mask.tolist()})
    model = AutoModelForCausalLM.from_pretrained(str(a.model), dtype=dtype, device_map="cpu")
    tokenizer = AutoTokenizer.from_pretrained(str(a.model))
    weight_args = {"num_bits": a.bits, "type": "int", "symmetric": a.sym,
                   "strategy": "group" if a.group_size > 0 else "channel",
                   "group_size": a.group_size if a.group_size > 0 else None}
    actorder = "weight" if a.desc_act else None
    recipe = GPTQModifier(config_groups={"group_0": {"targets": ["Linear"], "weights": weight_args}},
                          ignore=["lm_head"], dampening_frac=a.damp, actorder=actorder,
                          block_size=128)
    # Time each per-layer GPTQ solve (one compress_modules call per decoder layer).
    solve, ends = [], []
    original = GPTQModifier.compress_modules

    def timed(self):
        t, before = time.perf_counter(), self._num_compressed_modules
        original(self)
        if self._num_compressed_modules > before:  # skip epochs with nothing to quantize
            solve.append(time.perf_counter() - t)
            ends.append(time.perf_counter())
    GPTQModifier.compress_modules = timed
    t0, cpu0 = time.perf_counter(), time.process_time()
    oneshot(model=model, processor=tokenizer, dataset=dataset, recipe=recipe, pipeline="sequential",
            num_calibration_samples=ids.shape[0], max_seq_length=ids.shape[1],
            shuffle_calibration_samples=False)
    seconds = time.perf_counter() - t0
    extra_cpu = time.process_time() - cpu0
    GPTQModifier.compress_modules = original
    # After oneshot each quantized Linear holds its fake-quantized (dequantized) weight.
    weights, g_idxs = {}, {}
    for name, module in model.named_modules():
        if hasattr(module, "weight_scale"):
            weights[name + ".weight"] = module.weight.detach().float().clone()
            if getattr(module, "weight_g_idx", None) is not None:
                g_idxs[name + ".weight"] = module.weight_g_idx.detach().long().clone()
    model.save_pretrained(str(a.out), save_compressed=True)
    tokenizer.save_pretrained(str(a.out))
    settings = {"actorder": actorder, "block_size": 128, "pipeline": "sequential",
                "observer": "minmax on the original weight, before GPTQ (static groups)",
                "true_sequential": False, "ignore": ["lm_head"],
                "quantization_aware_calibration": True}
    if recipe._rtn_fallback_module_names:
        settings["rtn_fallback_modules"] = list(recipe._rtn_fallback_module_names)
    starts = [t0] + ends[:-1]
    notes = ["scale/zero of each group come from a min-max observer on the original weights "
             "before GPTQ runs (like static_groups), not from the error-updated weights",
             "all Linears of a layer are calibrated from one forward (not true-sequential); "
             "outputs of quantized layers feed the next layer",
             "the Hessian counts every position, attention_mask is not applied to it",
             "--desc-act maps to actorder='weight' (group 'dynamic' ordering is deprecated)",
             "seconds_per_layer = seconds_total / n_layers"]
    extra = {"cpu_seconds": extra_cpu, "notes": notes, "solve_seconds_per_layer": [round(s, 3) for s in solve],
             # wall time from the previous layer's end (the first includes oneshot's set-up)
             "layer_wall_seconds": [round(e - s, 3) for s, e in zip(starts, ends)]}
    return llmcompressor.__version__, seconds, settings, weights, g_idxs, extra


def main():
    a = parse_args()
    torch.set_num_threads(a.threads)
    dtype = "auto" if a.dtype == "auto" else DTYPES[a.dtype]
    c = load_file(str(a.calib))
    calib = (c["input_ids"].long(), c["attention_mask"].long())
    n_layers = json.loads((a.model / "config.json").read_text())["num_hidden_layers"]
    result = {"tool": a.tool, "bits": a.bits, "group_size": a.group_size, "sym": a.sym,
              "desc_act": a.desc_act, "damp": a.damp, "dtype": a.dtype, "threads": a.threads,
              "n_layers": n_layers, "calib": {"n": calib[0].shape[0], "seqlen": calib[0].shape[1],
                                              "real_tokens": int(calib[1].sum())}}
    a.json.parent.mkdir(parents=True, exist_ok=True)
    runner = run_gptqmodel if a.tool == "gptqmodel" else run_llmcompressor
    try:
        version, seconds, settings, weights, g_idxs, extra = runner(a, calib, dtype)
    except Exception as e:  # the peer refused these settings or failed: report, don't crash
        traceback.print_exc()
        result.update(error=f"{type(e).__name__}: {e}", peak_rss_mib=peak_rss_mib())
        a.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"{a.tool} failed: {result['error']}", file=sys.stderr)
        sys.exit(2)
    cpu = extra.pop("cpu_seconds")
    result.update(version=version, seconds_total=round(seconds, 3),
                  seconds_per_layer=round(seconds / n_layers, 3), cpu_seconds_per_layer=round(cpu / n_layers, 3), peak_rss_mib=peak_rss_mib(),
                  settings=settings, **extra)
    result["check"] = check_quantized(weights, g_idxs, a.bits, a.group_size)
    tensors = original_tensors(a.model)
    missing = [k for k in weights if k not in tensors]
    if missing:
        raise SystemExit(f"quantized weights not in the original model: {missing[:3]}")
    tensors.update(weights)
    write_dense(a.model, a.dense_out, tensors)
    a.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("tool", "version", "seconds_total",
                                             "seconds_per_layer", "peak_rss_mib")}))


if __name__ == "__main__":
    main()
