"""Compare two GGUF files tensor by tensor: names, types and data bytes, reporting the first
differing block."""

from pathlib import Path

from gguf import GGML_QUANT_SIZES, GGUFReader


def tensor_table(path: Path) -> dict:
    return {t.name: t for t in GGUFReader(path).tensors}


def differences(ours: Path, reference: Path) -> list[str]:
    """Human-readable differences; empty when the tensor data are identical."""
    a, b = tensor_table(ours), tensor_table(reference)
    problems = []
    if set(a) != set(b):
        problems.append(f"tensor names differ: only ours {sorted(set(a) - set(b))}, only reference {sorted(set(b) - set(a))}")
    for name in sorted(set(a) & set(b)):
        ta, tb = a[name], b[name]
        if ta.tensor_type != tb.tensor_type:
            problems.append(f"{name}: type {ta.tensor_type.name}, reference {tb.tensor_type.name}")
            continue
        da, db = ta.data.tobytes(), tb.data.tobytes()
        if da != db:
            _, block_bytes = GGML_QUANT_SIZES[ta.tensor_type]
            first = next(i for i in range(min(len(da), len(db))) if da[i] != db[i]) // block_bytes
            sl = slice(first * block_bytes, (first + 1) * block_bytes)
            problems.append(f"{name} ({ta.tensor_type.name}): first differing block {first}: ours {da[sl].hex()} reference {db[sl].hex()}")
    return problems


def metadata(path: Path, ignore: set[str] = frozenset()) -> dict:
    return {k: f.contents() for k, f in GGUFReader(path).fields.items() if not k.startswith("GGUF.") and k not in ignore}


def metadata_differences(ours: Path, reference: Path, ignore: set[str] = frozenset()) -> list[str]:
    a, b = metadata(ours, ignore), metadata(reference, ignore)
    problems = [f"key only in ours: {k}" for k in sorted(set(a) - set(b))]
    problems += [f"key only in reference: {k}" for k in sorted(set(b) - set(a))]
    problems += [f"{k}: {str(a[k])[:60]} != {str(b[k])[:60]}" for k in sorted(set(a) & set(b)) if a[k] != b[k]]
    return problems
