"""`qconvert inspect`: what a GGUF file or a Hugging Face model folder holds, as printable lines
(a calibration file: inspect_calib.py)."""

from collections import Counter
from pathlib import Path

import numpy as np
from gguf import GGUFValueType

from qconvert.errors import QConvertError
from qconvert.gguf_read import KV, read_gguf_header
from qconvert.hf.config import ModelConfig
from qconvert.hf.safetensors_reader import SafetensorsCheckpoint

_MAX_ARRAY_SHOWN = 5
_MAX_CHARS = 80


def _show(value, vtype: GGUFValueType) -> str:
    if vtype == GGUFValueType.FLOAT32:
        return str(np.float32(value))  # the shortest text that reads back as the same float32
    if isinstance(value, str) and len(value) > _MAX_CHARS:
        return repr(value[: _MAX_CHARS - 3] + "...")
    return repr(value)


def _kv_value(kv: KV) -> str:
    if kv.type != GGUFValueType.ARRAY:
        return _show(kv.value, kv.type)
    n = len(kv.value)
    items = ", ".join(_show(x, kv.sub_type) for x in kv.value[:_MAX_ARRAY_SHOWN])
    return f"[{n} items] [{items}{', ...' if n > _MAX_ARRAY_SHOWN else ''}]"


def describe_gguf(path: Path) -> list[str]:
    """Through qconvert's own reader, the one `quantize` uses: a damaged file is one clear error."""
    header = read_gguf_header(path)
    lines = [f"GGUF {path} ({header.file_size:,} bytes, version {header.version})", "", "metadata:"]
    lines += [f"  {name} = {_kv_value(kv)}" for name, kv in header.kv.items()]
    lines += ["", f"tensors ({len(header.tensors)}):", f"  {'name':<32} {'shape':<16} {'type':<6} {'bytes':>12}"]
    for t in header.tensors:
        shape = "x".join(str(d) for d in reversed(t.shape))  # GGUF order: ne0 (row length) first; a third: the experts
        lines.append(f"  {t.name:<32} {shape:<16} {t.type.name:<6} {t.n_bytes:>12,}")
    return lines


def _quantization(qc: dict | None) -> list[str]:
    if not qc:
        return []
    fields = ", ".join(f"{k} {qc[k]}" for k in ("bits", "group_size", "sym", "desc_act", "zero_point") if k in qc)
    return [f"  quantization: {qc.get('quant_method')} ({qc.get('checkpoint_format', qc.get('version', '?'))}): {fields}"]


def _experts(config: ModelConfig) -> list[str]:
    if not config.n_experts:
        return []
    shared = f", shared expert intermediate {config.shared_expert_intermediate_size}" if config.shared_expert_intermediate_size else ""
    return [f"  experts: {config.n_experts} per layer, {config.n_experts_used} used per token, expert intermediate {config.expert_intermediate_size}{shared}"]


def describe_hf(model_dir: Path) -> list[str]:
    config = ModelConfig.from_dir(model_dir)
    ckpt = SafetensorsCheckpoint.open(model_dir)
    n_params = ckpt.n_parameters
    dtypes = Counter(e.dtype for e in ckpt.entries.values())
    lines = [
        f"Hugging Face model {model_dir}",
        f"  architecture: {config.architecture}",
        f"  layers {config.num_layers}, hidden {config.hidden_size}, intermediate {config.intermediate_size}, "
        f"heads {config.num_heads} (kv {config.num_kv_heads}, head_dim {config.head_dim}), vocab {config.vocab_size}",
        *_experts(config),
        f"  tied embeddings: {config.tie_word_embeddings}",
        f"  tensors: {len(ckpt.entries)}, parameters: {n_params:,}, dtypes: {dict(dtypes)}",
        *_quantization(config.raw.get("quantization_config")),
        "",
        f"  {'name':<48} {'shape':<14} dtype",
    ]
    for e in sorted(ckpt.entries.values(), key=lambda e: e.name):
        lines.append(f"  {e.name:<48} {'x'.join(map(str, e.shape)):<14} {e.dtype}")
    return lines


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False


def describe(path: Path) -> list[str]:
    path = Path(path)
    if path.is_file() and (path.suffix.lower() == ".gguf" or _starts_with(path, b"GGUF")):
        return describe_gguf(path)
    if path.is_file() and path.suffix.lower() == ".safetensors":
        from qconvert.inspect_calib import describe_calibration

        return describe_calibration(path)
    if path.is_dir():
        return describe_hf(path)
    raise QConvertError("nothing to inspect here", path, "give a .gguf file, a Hugging Face model folder or a calibration .safetensors")
