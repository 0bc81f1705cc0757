"""The valid inputs the fuzz tests mutate, one per input kind, small so that a case takes milliseconds,
and a map of each binary seed's structure (its fields, found by walking the valid file).

- a GGUF model (qwen2, one layer, every metadata value type, F32/F16/BF16 tensors),
- an imatrix for it, as GGUF and as the legacy .dat,
- a Hugging Face folder (random one-layer Llama with the fixture's tokenizer), single-file and sharded,
- a calibration file of the fixture's tokenizer.
"""

import json
import shutil
import struct
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter

from tests.conftest import FIXTURE
from tests.fuzz.mutate import Field, text_fields

N_VOCAB = 64
HIDDEN = 256


def write_gguf_model(path: Path) -> Path:
    rng = np.random.default_rng(0)
    w = GGUFWriter(path, "qwen2")
    w.add_type("model")
    w.add_name("fuzz-seed")
    w.add_block_count(1)
    w.add_context_length(128)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(HIDDEN)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(1)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list([f"t{i}" for i in range(N_VOCAB)])
    w.add_token_types([1] * N_VOCAB)
    w.add_token_merges(["t 1", "t 2"])
    w.add_eos_token_id(1)
    w.add_chat_template("{{ messages }}")
    # one key of every other value type
    for vtype, value in ((GGUFValueType.UINT8, 7), (GGUFValueType.INT8, -7), (GGUFValueType.UINT16, 700), (GGUFValueType.INT16, -700),
                         (GGUFValueType.INT32, -70000), (GGUFValueType.UINT64, 2**40), (GGUFValueType.INT64, -(2**40)),
                         (GGUFValueType.FLOAT64, 0.25), (GGUFValueType.BOOL, True)):
        w.add_key_value(f"fuzz.{vtype.name.lower()}", value, vtype)
    w.add_key_value("fuzz.floats", [0.5, 1.5], GGUFValueType.ARRAY, sub_type=GGUFValueType.FLOAT32)
    tensors = {
        "token_embd.weight": rng.standard_normal((N_VOCAB, HIDDEN)).astype(np.float16),
        "blk.0.attn_norm.weight": np.ones(HIDDEN, np.float32),
        "blk.0.attn_q.weight": rng.standard_normal((HIDDEN, HIDDEN)).astype(np.float16),
        "blk.0.attn_k.weight": rng.standard_normal((128, HIDDEN)).astype(np.float32),
        "blk.0.ffn_down.weight": rng.standard_normal((HIDDEN, HIDDEN)).astype(np.float16),
        "output_norm.weight": np.ones(HIDDEN, np.float32),
        "output.weight": rng.standard_normal((N_VOCAB, HIDDEN)).astype(np.float16),
    }
    for name, t in tensors.items():
        w.add_tensor(name, t)
    # and one BF16 tensor, as raw bits
    bits = (rng.standard_normal((64, HIDDEN)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    w.add_tensor("blk.0.attn_v.weight", bits.view(np.uint8).reshape(64, HIDDEN * 2), raw_dtype=GGMLQuantizationType.BF16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_imatrix_gguf(path: Path) -> Path:
    from qconvert.imatrix.file import ImatrixEntry, ImportanceMatrix, write_imatrix

    rng = np.random.default_rng(1)
    entries = {name: ImatrixEntry(rng.random((1, HIDDEN), dtype=np.float32) * 10, np.array([100.0], np.float32))
               for name in ("blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.ffn_down.weight")}
    return write_imatrix(path, ImportanceMatrix(entries, ["fuzz.txt"], 10, 64))


def write_imatrix_dat(path: Path) -> Path:
    """llama-imatrix's legacy format: int32 n; per entry int32 name length, name, int32 ncall, int32
    nval, nval float32; then int32 chunk count, int32 length and the dataset name."""
    rng = np.random.default_rng(2)
    names = ("blk.0.attn_q.weight", "blk.0.ffn_down.weight")
    out = struct.pack("<i", len(names))
    for name in names:
        out += struct.pack("<i", len(name)) + name.encode() + struct.pack("<ii", 10, HIDDEN) + (rng.random(HIDDEN, dtype=np.float32) * 10).tobytes()
    out += struct.pack("<ii", 10, 8) + b"fuzz.txt"
    path.write_bytes(out)
    return path


def dat_fields(data: bytes) -> list[Field]:
    fields, pos = [Field(0, 4, "entry count")], 4
    (n,) = struct.unpack_from("<i", data, 0)
    for i in range(n):
        (name_len,) = struct.unpack_from("<i", data, pos)
        fields += [Field(pos, 4, f"entry {i} name length"), Field(pos + 4, name_len, f"entry {i} name")]
        pos += 4 + name_len
        (nval,) = struct.unpack_from("<i", data, pos + 4)
        fields += [Field(pos, 4, f"entry {i} ncall"), Field(pos + 4, 4, f"entry {i} nval"), Field(pos + 8, 4 * nval, f"entry {i} values")]
        pos += 8 + 4 * nval
    fields += [Field(pos, 4, "chunk count"), Field(pos + 4, 4, "dataset length"), Field(pos + 8, len(data) - pos - 8, "dataset")]
    return fields


_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def gguf_fields(data: bytes) -> list[Field]:
    """Every field of a valid GGUF's header, and where each tensor's data starts and ends."""
    fields = [Field(0, 4, "magic"), Field(4, 4, "version"), Field(8, 8, "tensor count"), Field(16, 8, "metadata count")]
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    pos = 24

    def string(label: str) -> str:
        nonlocal pos
        (n,) = struct.unpack_from("<Q", data, pos)
        fields.extend([Field(pos, 8, f"{label} length"), Field(pos + 8, n, label)])
        pos += 8 + n
        return data[pos - n : pos].decode()

    alignment = 32
    for _ in range(n_kv):
        key = string("key")
        (vtype,) = struct.unpack_from("<I", data, pos)
        fields.append(Field(pos, 4, f"{key} type"))
        pos += 4
        if vtype == 8:
            string(f"{key} value")
        elif vtype == 9:
            sub, count = struct.unpack_from("<IQ", data, pos)
            fields += [Field(pos, 4, f"{key} element type"), Field(pos + 4, 8, f"{key} count")]
            pos += 12
            for i in range(count):
                if sub == 8:
                    if i < 4:
                        string(f"{key}[{i}]")
                    else:
                        (n,) = struct.unpack_from("<Q", data, pos)
                        pos += 8 + n
                else:
                    if i == 0:
                        fields.append(Field(pos, _SIZES[sub] * count, f"{key} elements"))
                    pos += _SIZES[sub]
        else:
            if key == "general.alignment":
                (alignment,) = struct.unpack_from("<I", data, pos)
            fields.append(Field(pos, _SIZES[vtype], f"{key} value"))
            pos += _SIZES[vtype]
    infos = []
    for _ in range(n_tensors):
        name = string("tensor name")
        (n_dims,) = struct.unpack_from("<I", data, pos)
        fields.append(Field(pos, 4, f"{name} n_dims"))
        pos += 4
        for d in range(n_dims):
            fields.append(Field(pos, 8, f"{name} ne[{d}]"))
            pos += 8
        fields += [Field(pos, 4, f"{name} type"), Field(pos + 4, 8, f"{name} offset")]
        infos.append((name, struct.unpack_from("<Q", data, pos + 4)[0]))
        pos += 12
    start = pos + -pos % alignment
    fields.append(Field(pos, start - pos, "padding"))
    offsets = sorted(o for _, o in infos) + [len(data) - start]
    for (name, offset) in infos:
        end = min(o for o in offsets if o > offset) if any(o > offset for o in offsets) else len(data) - start
        fields.append(Field(start + offset, end - offset, f"{name} data"))
    return fields


def safetensors_fields(data: bytes) -> list[Field]:
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8 : 8 + n])
    fields = [Field(0, 8, "header length")] + [Field(8 + f.offset, f.size, f"header {f.label}") for f in text_fields(data[8 : 8 + n])]
    for name, info in header.items():
        if name != "__metadata__":
            begin, end = info["data_offsets"]
            fields.append(Field(8 + n + begin, end - begin, f"{name} data"))
    return fields


def make_hf_model(dst: Path) -> Path:
    """A random one-layer Llama (hidden 64) with the fixture's tokenizer: converts in milliseconds."""
    from tests.gptq.models import make_random_llama

    return make_random_llama(dst, hidden=64, intermediate=128, layers=1, heads=4, kv_heads=2, tied=False)


def make_sharded(src: Path, dst: Path) -> Path:
    """`src` split into two shards with a model.safetensors.index.json."""
    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, dst)
    (dst / "model.safetensors").unlink()
    tensors = load_file(src / "model.safetensors")
    names = sorted(tensors)
    parts = {"model-00001-of-00002.safetensors": names[: len(names) // 2], "model-00002-of-00002.safetensors": names[len(names) // 2 :]}
    for fname, part in parts.items():
        save_file({n: tensors[n] for n in part}, dst / fname, metadata={"format": "pt"})
    weight_map = {n: fname for fname, part in parts.items() for n in part}
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())}, "weight_map": weight_map}
    (dst / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return dst


def write_calibration_seed(path: Path, tokenizer) -> Path:
    import torch

    from qconvert.calib.store import CalibrationSet, tokenizer_sha256, write_calibration
    from qconvert.calib.types import Counts, Manifest, SamplingOptions, SourceRecord, TokenizerInfo

    ids = torch.randint(0, 4000, (4, 32), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[3, 20:] = 0
    info = TokenizerInfo(tokenizer_sha256(tokenizer), type(tokenizer).__name__, len(tokenizer), 0, str(FIXTURE))
    source = SourceRecord("calibration/en", "text", "text", "0" * 64, 1000, 3)
    counts = Counts(3, 3, 0, 0, 0, 200, 0, 1, 0, 4, 4, int(mask.sum()))
    manifest = Manifest(info, SamplingOptions(n_samples=4, seqlen=32), (source,), counts)
    return write_calibration(CalibrationSet(ids, mask, manifest), path)
