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


# --- a SentencePiece tokenizer.model ------------------------------------------------------------------

SPM_PIECES = 400  # few pieces (256 of them bytes): trained in a fraction of a second


def make_spm_model(src: Path, dst: Path) -> Path:
    """`src` (the small Llama) with a SentencePiece tokenizer as Llama 2 ships it: a BPE model with
    byte fallback (identity normalization, <unk> <s> </s> at 0-2, a control and a user-defined
    symbol), tokenizer_config.json naming LlamaTokenizer, no tokenizer.json."""
    import sentencepiece as spm

    from tests.conftest import ROOT

    shutil.copytree(src, dst)
    (dst / "tokenizer.json").unlink(missing_ok=True)
    train = dst.parent / "spm-train"
    train.mkdir(exist_ok=True)
    text = train / "train.txt"
    text.write_text((ROOT / "calibration" / "en" / "austen-emma.txt").read_text(encoding="utf-8")[:40_000], encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(train / "sp"), vocab_size=SPM_PIECES, model_type="bpe", byte_fallback=True,
        user_defined_symbols=["<tool>"], control_symbols=["[INST]"], unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        character_coverage=1.0, split_digits=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
        num_threads=1, minloglevel=2, seed_sentencepiece_size=20_000,
    )
    shutil.copyfile(train / "sp.model", dst / "tokenizer.model")
    shutil.rmtree(train)
    config = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
              "tokenizer_class": "LlamaTokenizer", "legacy": False, "added_tokens_decoder": {
                  str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
                  for i, t in ((0, "<unk>"), (1, "<s>"), (2, "</s>"), (3, "[INST]"))}}
    (dst / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    for name in ("special_tokens_map.json", "vocab.json", "merges.txt", "added_tokens.json"):
        (dst / name).unlink(missing_ok=True)
    return dst


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[pos]
        value |= (b & 0x7F) << shift
        pos += 1
        shift += 7
        if not b & 0x80:
            return value, pos


# ModelProto's message fields (pieces, trainer_spec, normalizer_spec, denormalizer_spec), walked into
_SPM_MESSAGES = {1: "piece", 2: "trainer_spec", 3: "normalizer_spec", 5: "denormalizer_spec"}


def protobuf_fields(data: bytes, start: int = 0, end: int | None = None, label: str = "model", depth: int = 0) -> list[Field]:
    """A protobuf message's structure as byte fields: each tag, varint, fixed32/64 value, length and
    payload; ModelProto's sub-messages are walked into. Length fields are labelled "... length"."""
    end = len(data) if end is None else end
    fields, pos, counts = [], start, {}
    while pos < end:
        tag, after = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        counts[number] = counts.get(number, 0) + 1
        name = f"{label}.{_SPM_MESSAGES.get(number, number) if depth == 0 else number}"
        if depth == 0 and number == 1:
            name += f"[{counts[number] - 1}]"
        fields.append(Field(pos, after - pos, f"{name} tag"))
        pos = after
        if wire == 0:
            _, after = _varint(data, pos)
            fields.append(Field(pos, after - pos, f"{name} varint"))
        elif wire in (1, 5):
            after = pos + (8 if wire == 1 else 4)
            fields.append(Field(pos, after - pos, f"{name} fixed{8 * (after - pos)}"))
        elif wire == 2:
            n, body = _varint(data, pos)
            fields.append(Field(pos, body - pos, f"{name} length"))
            after = body + n
            if depth == 0 and number in _SPM_MESSAGES:
                fields += protobuf_fields(data, body, after, name, depth + 1)
            else:
                fields.append(Field(body, n, f"{name} bytes"))
        else:
            raise ValueError(f"wire type {wire} in a valid seed")
        pos = after
    return fields


# --- GPTQ and AWQ checkpoints ----------------------------------------------------------------------------

_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
QUANT_GROUP = 32


def _quantized_copy(src: Path, dst: Path, quantization_config: dict, pack) -> Path:
    """`src` with every decoder linear replaced by `pack(name, weight (out, in) float32)`'s tensors."""
    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, dst)
    tensors = load_file(src / "model.safetensors")
    out = {}
    for name, t in tensors.items():
        prefix = name.removesuffix(".weight")
        if name.endswith(".weight") and prefix.split(".", 3)[-1] in _LINEARS:
            for leaf, value in pack(t.astype(np.float32)).items():
                out[f"{prefix}.{leaf}"] = np.ascontiguousarray(value)
        else:
            out[name] = t
    save_file(out, dst / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((dst / "config.json").read_text())
    config["quantization_config"] = quantization_config
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    return dst


def _rtn(w: np.ndarray, groups: np.ndarray, n_groups: int, bits: int, zero_min: int):
    """Round-to-nearest levels (out, in), zeros and scales (n_groups, out) of w by input groups."""
    maxq = 2**bits - 1
    lo = np.stack([w[:, groups == g].min(axis=1) for g in range(n_groups)])
    hi = np.stack([w[:, groups == g].max(axis=1) for g in range(n_groups)])
    scales = np.maximum(hi - lo, 1e-5) / maxq
    zeros = np.clip(np.round(-lo / scales), zero_min, maxq).astype(np.int32)
    levels = np.clip(np.round(w / scales[groups].T) + zeros[groups].T, 0, maxq).astype(np.int32)
    return levels, zeros, scales.astype(np.float16)


def make_gptq_model(src: Path, dst: Path, bits: int = 4) -> Path:
    """A GPTQ v1 checkpoint (AutoGPTQ's layout, desc_act: a permuted g_idx) of `src`, by round to nearest."""
    from qconvert.gptq.packing import pack_rows

    rng = np.random.default_rng(0)

    def pack(w: np.ndarray) -> dict:
        n_in = w.shape[1]
        g_idx = (rng.permutation(n_in) // QUANT_GROUP).astype(np.int32)
        levels, zeros, scales = _rtn(w, g_idx, n_in // QUANT_GROUP, bits, zero_min=1)
        return {"qweight": pack_rows(levels, bits).T, "qzeros": pack_rows(zeros - 1, bits), "scales": scales, "g_idx": g_idx}

    qc = {"quant_method": "gptq", "checkpoint_format": "gptq", "bits": bits, "group_size": QUANT_GROUP, "desc_act": True, "static_groups": False,
          "sym": False, "damp_percent": 0.01, "true_sequential": True, "lm_head": False, "pack_dtype": "int32"}
    return _quantized_copy(src, dst, qc, pack)


def make_awq_model(src: Path, dst: Path) -> Path:
    """A 4-bit AWQ GEMM checkpoint of `src`, by round to nearest (no scale search)."""
    import torch

    from qconvert.awq.packing import pack_gemm

    def pack(w: np.ndarray) -> dict:
        groups = np.arange(w.shape[1]) // QUANT_GROUP
        levels, zeros, scales = _rtn(w, groups, w.shape[1] // QUANT_GROUP, 4, zero_min=0)
        packed = pack_gemm(torch.from_numpy(levels), torch.from_numpy(zeros.T.copy()), torch.from_numpy(scales.T.copy()))
        return {k: v.numpy() for k, v in packed.items()}

    qc = {"quant_method": "awq", "version": "gemm", "bits": 4, "group_size": QUANT_GROUP, "zero_point": True, "modules_to_not_convert": None}
    return _quantized_copy(src, dst, qc, pack)


# --- a recipe --------------------------------------------------------------------------------------------

RECIPE = """\
# a release of the small model: every section, every kind of value
[model]
path = "model"
name = "small"

[calibration]
sources = ["calib.txt"]
n_samples = 8
seqlen = 128
mode = "concat"

[gguf]
types = ["q4_0", "q4_k_m", "q8_0"]
imatrix = "both"
ollama = true

[[gptq]]
bits = 4
group_size = 32
damp = 0.01

[[gptq]]
bits = 8
group_size = 32
sym = false
desc_act = true

[awq]
bits = 4
group_size = 32
gguf_types = ["q4_k_m"]

[eval]
text = "eval.txt"
ctx = 128
chunks = 2

[run]
device = "cpu"
compute_dtype = "float32"
threads = 1
"""

RECIPE_MATRIX = """\
# a release matrix: two variants of the small model
[calibration]
n_samples = 8
seqlen = 128

[gguf]
types = ["q4_0", "q8_0"]
imatrix = "both"

[[gptq]]
bits = 4
group_size = 32

[eval]
text = "eval.txt"
ctx = 128

[[models]]
path = "model"

[[models]]
path = "model"
variant = "g64"
gguf = { types = ["q4_0", "q4_k_m"] }
gptq = [{ bits = 4, group_size = 64 }, { bits = 8, group_size = 64 }]
awq = { group_size = 64 }
"""


def make_recipe_folder(model: Path, dst: Path) -> Path:
    """A folder with the small model, a calibration and an evaluation text, and the two recipes."""
    from tests.conftest import ROOT

    dst.mkdir(parents=True, exist_ok=True)
    shutil.copytree(model, dst / "model")
    text = (ROOT / "calibration" / "en" / "austen-emma.txt").read_text(encoding="utf-8")
    (dst / "calib.txt").write_text(text[:20_000], encoding="utf-8")
    (dst / "eval.txt").write_text(text[20_000:30_000], encoding="utf-8")
    (dst / "recipe.toml").write_text(RECIPE, encoding="utf-8")
    (dst / "matrix.toml").write_text(RECIPE_MATRIX, encoding="utf-8")
    return dst
