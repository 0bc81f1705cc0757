"""Logits of a GPTQ or AWQ checkpoint loaded through plain transformers (GPTQModel's CPU kernels).

Runs in .venv-gptqmodel (made by setup_peers.sh). Loads CKPT_DIR with
`AutoModelForCausalLM.from_pretrained(path, device_map="cpu")` -- transformers dispatches
GPTQ and AWQ checkpoints to gptqmodel -- runs each list of token ids as one sequence, and writes the
float32 logits to a safetensors file: `logits_0`, `logits_1`, ... of shape (len(ids), vocab).

    python transformers_logits.py CKPT_DIR --ids-json '[[1,2,3],[4,5]]' --out logits.safetensors \
        [--backend auto|gptq_torch|...] [--loader transformers|gptqmodel]

`--loader gptqmodel` loads with `GPTQModel.load` instead (float32): transformers 5's own loader
fuses MoE experts into 3-D parameters and cannot place per-expert quantized linears in them.
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("ckpt")
    p.add_argument("--ids-json", required=True, help="JSON list of lists of token ids")
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backend", default="auto",
                   help="gptqmodel kernel, e.g. gptq_torch (the auto-selected CPU AVX512 kernel "
                        "refuses a width that is not a multiple of the group size)")
    p.add_argument("--loader", choices=["transformers", "gptqmodel"], default="transformers")
    a = p.parse_args()
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(a.threads))
    torch.set_num_threads(a.threads)
    from transformers import AutoModelForCausalLM, AwqConfig, GPTQConfig

    ids = json.loads(a.ids_json)
    if not ids or not all(isinstance(seq, list) and seq for seq in ids):
        raise SystemExit("--ids-json must be a non-empty list of non-empty lists of token ids")
    qcfg = json.load(open(os.path.join(a.ckpt, "config.json")))["quantization_config"]
    if qcfg["quant_method"] == "awq":  # loading attributes only: the backend
        qcfg = AwqConfig(bits=qcfg["bits"], group_size=qcfg["group_size"], backend=a.backend)
    else:
        qcfg = GPTQConfig(bits=qcfg["bits"], backend=a.backend)
    if a.loader == "gptqmodel":
        from gptqmodel import GPTQModel

        model = GPTQModel.load(a.ckpt, device="cpu", dtype=torch.float32).model
    else:
        model = AutoModelForCausalLM.from_pretrained(a.ckpt, device_map="cpu", quantization_config=qcfg)
    model.eval()
    kinds = sorted({type(m).__name__ for m in model.modules() if hasattr(m, "qweight")})
    out = {}
    with torch.inference_mode():
        for i, seq in enumerate(ids):
            out[f"logits_{i}"] = model(torch.tensor([seq])).logits[0].float().contiguous()
    save_file(out, a.out, metadata={"ckpt": str(a.ckpt), "quant_linear": ",".join(kinds),
                                    "dtype": str(model.dtype)})
    print(f"wrote {a.out}: {len(out)} sequence(s); quantized layers: {', '.join(kinds) or 'none'}")


if __name__ == "__main__":
    main()
