"""`qconvert inspect`: what a GGUF file or a Hugging Face model folder holds, as printable lines
(a calibration file: inspect_calib.py)."""

from collections import Counter
from pathlib import Path

from gguf import GGUFReader, GGUFValueType

from qconvert.errors import QConvertError
from qconvert.hf.config import ModelConfig
from qconvert.hf.safetensors_reader import SafetensorsCheckpoint

_MAX_ARRAY_SHOWN = 5


def _field_value(field) -> str:
    types = field.types
    if not types:
        return "?"
    if types[0] == GGUFValueType.ARRAY:
        n = len(field.data)
        items = [field.contents(i) for i in range(min(n, _MAX_ARRAY_SHOWN))]
        more = ", ..." if n > _MAX_ARRAY_SHOWN else ""
        return f"[{n} items] [{', '.join(repr(x) for x in items)}{more}]"
    value = field.contents()
    if isinstance(value, str) and len(value) > 80:
        return repr(value[:77] + "...")
    return repr(value)


def describe_gguf(path: Path) -> list[str]:
    try:
        reader = GGUFReader(path)
    except (ValueError, OSError) as exc:
        raise QConvertError(f"not a readable GGUF file: {exc}", path) from exc
    lines = [f"GGUF {path} ({path.stat().st_size:,} bytes)", "", "metadata:"]
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        lines.append(f"  {name} = {_field_value(field)}")
    lines += ["", f"tensors ({len(reader.tensors)}):", f"  {'name':<32} {'shape':<16} {'type':<6} {'bytes':>12}"]
    for t in reader.tensors:
        shape = "x".join(str(int(d)) for d in t.shape)  # GGUF order: ne0 (row length) first; a third: the experts
        lines.append(f"  {t.name:<32} {shape:<16} {t.tensor_type.name:<6} {int(t.n_bytes):>12,}")
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


def describe(path: Path) -> list[str]:
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".gguf":
        return describe_gguf(path)
    if path.is_file() and path.suffix.lower() == ".safetensors":
        from qconvert.inspect_calib import describe_calibration

        return describe_calibration(path)
    if path.is_dir():
        return describe_hf(path)
    raise QConvertError("nothing to inspect here", path, "give a .gguf file, a Hugging Face model folder or a calibration .safetensors")
