"""Quantize a model with llm-compressor's AWQ on CPU, as a peer to qconvert's AWQ.

Runs inside .venv-llmcompressor and never imports qconvert; the calibration input, --dense-out
checkpoint, quantization check and error handling are those of run_peer_gptq.py (imported from
there). Recipe: AWQModifier(duo_scaling=True, n_grid=20, default mappings for the architecture)
followed by QuantizationModifier(W4A16 group-wise, asymmetric unless --no-zero-point,
ignore lm_head), run by oneshot(pipeline="sequential") on exactly the calibration tokens.

llm-compressor's AWQ has no AutoAWQ-style clip search (nothing in modifiers/transform/awq/
clips). The closest thing it has is a range-shrinking weight observer, so by default the final
weight quantization uses observer "memoryless_mse" (per-group min/max shrunk by up to 20% to
minimise the weight error |W - Q(W)|^2.4, not AutoAWQ's output error); --no-clip keeps the
plain min-max observer (llm-compressor's default). See "notes" in the JSON for the details.

Runtime patch (CPU-only torch): AWQModifier._apply_smoothing calls IntermediatesCache.pin_memory
for every cached batch unconditionally, and Tensor.pin_memory() raises "RuntimeError: Cannot
access accelerator device when none is available". Pinning only speeds host-to-device copies,
so this script makes IntermediatesCache.pin_memory a no-op when no accelerator is present.

Writes --out (compressed-tensors pack-quantized), --dense-out (plain HF float32 checkpoint:
every tensor of the model after oneshot, i.e. AWQ-scaled norms and Linears, with each quantized
Linear's weight replaced by its dequantized value) and --json (tool, version, settings,
seconds, seconds per layer, peak RSS, per-layer times, check, notes, patches).

    .venv-llmcompressor/bin/python run_peer_awq.py --model M --calib C.safetensors --bits 4 \
        --group-size 64 --threads 2 --out O --dense-out D --json R.json
"""
import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_peer_gptq import (DTYPES, check_quantized, original_tensors, peak_rss_mib,  # noqa: E402
                           write_dense)

PATCHES = []


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--calib", required=True, type=Path)
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--group-size", type=int, default=128, help="-1: one group per row")
    p.add_argument("--zero-point", action=argparse.BooleanOptionalAction, default=True,
                   help="asymmetric with zero point (default) or symmetric")
    p.add_argument("--no-clip", dest="clip", action="store_false",
                   help="plain min-max ranges (default: llm-compressor's MSE range observer)")
    p.add_argument("--dtype", default="float32", choices=[*DTYPES, "auto"],
                   help="dtype the model is loaded and run in while quantizing")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--dense-out", required=True, type=Path)
    p.add_argument("--json", required=True, type=Path)
    return p.parse_args()


def patch_pin_memory():
    """Make IntermediatesCache.pin_memory a no-op without an accelerator (see docstring)."""
    from llmcompressor.pipelines.cache import IntermediatesCache
    if torch.accelerator.is_available():
        return
    IntermediatesCache.pin_memory = lambda self, batch_index, input_names=None: None
    PATCHES.append("llmcompressor.pipelines.cache.IntermediatesCache.pin_memory -> no-op (no "
                   "accelerator: Tensor.pin_memory() raises 'Cannot access accelerator device "
                   "when none is available'; AWQModifier._apply_smoothing pins every cached "
                   "batch unconditionally)")


def dequantized_weights(model):
    """Dequantized weight of every quantized Linear; whether oneshot had left it on the grid."""
    from compressed_tensors.quantization.lifecycle import fake_quantize
    weights, on_grid = {}, []
    for name, module in model.named_modules():
        if not hasattr(module, "weight_scale"):
            continue
        w = module.weight.detach().float()
        args = module.quantization_scheme.weights
        dq = fake_quantize(w, module.weight_scale.float(), module.weight_zero_point, args)
        on_grid.append(bool(torch.equal(dq, w)))
        weights[name + ".weight"] = dq.clone()
    return weights, all(on_grid)


def run(a, calib, dtype):
    import llmcompressor
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform.awq import AWQModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    patch_pin_memory()
    ids, mask = calib
    dataset = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": mask.tolist()})
    model = AutoModelForCausalLM.from_pretrained(str(a.model), dtype=dtype, device_map="cpu")
    tokenizer = AutoTokenizer.from_pretrained(str(a.model))
    observer = "memoryless_mse" if a.clip else "memoryless_minmax"
    weight_args = {"num_bits": a.bits, "type": "int", "symmetric": not a.zero_point,
                   "strategy": "group" if a.group_size > 0 else "channel",
                   "group_size": a.group_size if a.group_size > 0 else None,
                   "observer": observer}
    awq = AWQModifier(duo_scaling=True)  # n_grid 20, mappings inferred from the architecture
    quant = QuantizationModifier(
        config_groups={"group_0": {"targets": ["Linear"], "weights": weight_args}},
        ignore=["lm_head"])
    # Time AWQ's per-layer smoothing (grid search + scaling), run at each layer's epoch end.
    smooth, ends = [], []
    original = AWQModifier.on_sequential_epoch_end

    def timed(self, state, event, **kwargs):
        t, busy = time.perf_counter(), bool(self._smooth_activation_stats)
        original(self, state, event, **kwargs)
        if busy:  # skip the last epoch (final norm, lm_head): nothing to smooth
            smooth.append(time.perf_counter() - t)
            ends.append(time.perf_counter())
    AWQModifier.on_sequential_epoch_end = timed
    t0, cpu0 = time.perf_counter(), time.process_time()
    try:
        oneshot(model=model, processor=tokenizer, dataset=dataset, recipe=[awq, quant],
                pipeline="sequential", num_calibration_samples=ids.shape[0],
                max_seq_length=ids.shape[1], shuffle_calibration_samples=False)
    finally:
        AWQModifier.on_sequential_epoch_end = original
    seconds, rss = time.perf_counter() - t0, peak_rss_mib()  # before the dense export
    cpu_seconds = time.process_time() - cpu0
    weights, was_on_grid = dequantized_weights(model)
    state = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
    model.save_pretrained(str(a.out), save_compressed=True)
    tokenizer.save_pretrained(str(a.out))
    awq._set_resolved_mappings(model)  # resolve again (oneshot cleared them) to report them
    resolved = [f"{m.smooth_name} -> {', '.join(m.balance_names)} (parent {m.parent_name})"
                for m in awq._resolved_mappings if ".layers.0." in m.smooth_name + "."]
    awq._resolved_mappings.clear()
    settings = {"duo_scaling": awq.duo_scaling, "n_grid": awq.n_grid,
                "mappings": [[m.smooth_layer, m.balance_layers] for m in awq.mappings],
                "resolved_mappings_layer0": resolved,
                "weight_observer": observer, "pipeline": "sequential", "ignore": ["lm_head"],
                "oneshot_left_weights_fake_quantized": was_on_grid}
    starts = [t0] + ends[:-1]
    notes = [
        "no clip search: llm-compressor's AWQ only searches per-input-channel scales; "
        + ("--clip maps to the memoryless_mse weight observer (per-group min/max shrunk by "
           "p = 1 - i/100, i < 20 (stopping after 5 steps without a gain in any group), "
           "minimising sum |W - Q(W)|^2.4 over the group; AutoAWQ's "
           "clip instead shrinks max|W| by up to 50% to minimise the Linear's output error on "
           "calibration inputs, and skips q/k)" if a.clip else
           "--no-clip: plain per-group min-max (llm-compressor's default)"),
        "scale grid (duo_scaling=True, n_grid=20): s = x_mean^r / (w_mean^(1-r) + 1e-4) for "
        "r = i/18, i = 0..18, plus r = 0 without weights (identity scale); AutoAWQ uses "
        "r = i/20, i = 0..19; s is normalised by sqrt(max(s) * min(s)); x_mean = mean |x| "
        "over all calibration positions (padding included, attention_mask not applied)",
        "loss of a candidate s: MSE between the parent module's output with fp weights and "
        "with Q(W*s)/s in the balance layers only (parent = self_attn for the input_layernorm "
        "mapping, mlp for post_attention_layernorm, down_proj for up_proj), min-max ranges "
        "during the search",
        "mappings: input_layernorm -> q/k/v_proj, v_proj -> o_proj (skipped when the shapes "
        "differ, i.e. with GQA), post_attention_layernorm -> gate/up_proj, "
        "up_proj -> down_proj; scales are folded into the norm / previous Linear",
        "propagation: the sequential pipeline runs with quantization disabled and the "
        "QuantizationModifier only sets weight_scale/zero_point at each layer's end, so the "
        "next layer is calibrated on outputs of the AWQ-scaled but unquantized layer "
        "(original activations up to rounding), not on quantized ones",
        "compressed-tensors int range is [-2^(b-1), 2^(b-1)-1] with the zero point clamped in "
        "it, and each group's range is widened to contain 0",
        "seconds_per_layer = seconds_total / n_layers; smooth_seconds_per_layer times AWQ's "
        "per-layer grid search and scaling; peak_rss_mib is read right after oneshot",
    ]
    extra = {"peak_rss_mib": rss, "cpu_seconds": cpu_seconds, "notes": notes,
             "smooth_seconds_per_layer": [round(s, 3) for s in smooth],
             # wall time from the previous layer's end (the first includes oneshot's set-up)
             "layer_wall_seconds": [round(e - s, 3) for s, e in zip(starts, ends)]}
    return llmcompressor.__version__, seconds, settings, weights, extra, state


def dense_tensors(model_dir, model_state, weights):
    """The original tensors' names, valued as after oneshot, quantized Linears dequantized."""
    tensors = original_tensors(model_dir)
    missing = [k for k in tensors if k not in model_state]
    missing += [k for k in weights if k not in tensors]
    if missing:
        raise SystemExit(f"tensor names differ from the original model: {missing[:3]}")
    tensors.update({k: model_state[k] for k in tensors})
    tensors.update(weights)
    return tensors


def main():
    a = parse_args()
    torch.set_num_threads(a.threads)
    dtype = "auto" if a.dtype == "auto" else DTYPES[a.dtype]
    c = load_file(str(a.calib))
    calib = (c["input_ids"].long(), c["attention_mask"].long())
    n_layers = json.loads((a.model / "config.json").read_text())["num_hidden_layers"]
    result = {"tool": "llmcompressor-awq", "bits": a.bits, "group_size": a.group_size,
              "zero_point": a.zero_point, "clip": a.clip, "dtype": a.dtype, "threads": a.threads,
              "n_layers": n_layers, "calib": {"n": calib[0].shape[0], "seqlen": calib[0].shape[1],
                                              "real_tokens": int(calib[1].sum())}}
    a.json.parent.mkdir(parents=True, exist_ok=True)
    try:
        version, seconds, settings, weights, extra, state = run(a, calib, dtype)
    except Exception as e:  # llm-compressor refused these settings or failed: report, don't crash
        traceback.print_exc()
        result.update(error=f"{type(e).__name__}: {e}", patches=PATCHES,
                      peak_rss_mib=peak_rss_mib())
        a.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"llm-compressor AWQ failed: {result['error']}", file=sys.stderr)
        sys.exit(2)
    result.update(version=version, seconds_total=round(seconds, 3),
                  seconds_per_layer=round(seconds / n_layers, 3),
                  cpu_seconds_per_layer=round(extra.pop("cpu_seconds") / n_layers, 3), settings=settings,
                  patches=PATCHES, **extra)
    result["check"] = check_quantized(weights, {}, a.bits, a.group_size)
    write_dense(a.model, a.dense_out, dense_tensors(a.model, state, weights))
    a.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("tool", "version", "seconds_total",
                                             "seconds_per_layer", "peak_rss_mib")}))


if __name__ == "__main__":
    main()
