"""The inputs the fuzz corpus found that ended in a traceback before issue 15, each now a clear error
(in-process: milliseconds)."""

import json
import shutil
import struct

import pytest

from qconvert.errors import QConvertError
from tests.conftest import FIXTURE
from tests.fuzz import seeds


def _model_copy(tmp_path, small_model):
    dst = tmp_path / "model"
    shutil.copytree(small_model, dst)
    return dst


def _edit_json(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.update(rope_theta=1e308), "float32"),  # was OverflowError in GGUFWriter
        (lambda c: c.update(rope_theta=float("nan")), "float32"),
        (lambda c: c.update(num_attention_heads=0), "num_attention_heads"),  # was ZeroDivisionError
        (lambda c: c.update(hidden_size="64"), "hidden_size"),  # was accepted as 64
        (lambda c: c.update(vocab_size=10**12), "vocab_size"),  # was a 10^12-row vocabulary loop
        (lambda c: c.update(architectures="LlamaForCausalLM"), "architectures"),  # was the architecture "L"
        (lambda c: c.update(rope_scaling=[1]), "rope_scaling"),  # was AttributeError
        (lambda c: c.update(num_key_value_heads=3), "num_key_value_heads"),
    ],
    ids=["rope-theta-huge", "rope-theta-nan", "zero-heads", "string-width", "huge-vocab", "architectures-string", "rope-list", "kv-heads"],
)
def test_config_json(tmp_path, small_model, edit, message):
    from qconvert.hf.config import ModelConfig

    model = _model_copy(tmp_path, small_model)
    _edit_json(model / "config.json", edit)
    with pytest.raises(QConvertError, match=message):
        ModelConfig.from_dir(model)


def _header_edit(path, edit):
    raw = path.read_bytes()
    (n,) = struct.unpack_from("<Q", raw)
    header = json.loads(raw[8 : 8 + n])
    edit(header)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda h: h["model.norm.weight"].update(dtype=["F16"]), "dtype"),  # was TypeError: unhashable
        (lambda h: h["model.norm.weight"].update(data_offsets=["0", "128"]), "corrupt safetensors entry"),  # was TypeError
        (lambda h: h["model.norm.weight"].update(shape=[-8, -8]), "corrupt safetensors entry"),  # was accepted
        (lambda h: h["model.norm.weight"].update(data_offsets=h["lm_head.weight"]["data_offsets"], shape=h["lm_head.weight"]["shape"]), "overlap"),
    ],
    ids=["dtype-list", "offsets-strings", "negative-shape", "overlap"],
)
def test_safetensors_header(tmp_path, small_model, edit, message):
    from qconvert.hf.safetensors_reader import SafetensorsCheckpoint

    model = _model_copy(tmp_path, small_model)
    _header_edit(model / "model.safetensors", edit)
    with pytest.raises(QConvertError, match=message):
        SafetensorsCheckpoint.open(model)


@pytest.mark.parametrize("shard", ["../model.safetensors", {"a": 1}, 7, "/etc/passwd"], ids=["parent", "object", "number", "absolute"])
def test_safetensors_index_names_only_files_in_the_folder(tmp_path, small_model, shard):
    from qconvert.hf.safetensors_reader import SafetensorsCheckpoint

    model = seeds.make_sharded(small_model, tmp_path / "sharded")
    _edit_json(model / "model.safetensors.index.json", lambda d: d["weight_map"].update({"model.norm.weight": shard}))
    with pytest.raises(QConvertError, match="not a file name"):  # was TypeError, or a file outside the folder read
        SafetensorsCheckpoint.open(model)


def test_imatrix_with_a_nan_is_refused_where_it_is_read(tmp_path):
    """Was a ValueError from the C quantizer ("importance weight 245 is not finite")."""
    from qconvert.imatrix.file import read_imatrix

    path = seeds.write_imatrix_dat(tmp_path / "imatrix.dat")
    raw = bytearray(path.read_bytes())
    struct.pack_into("<f", raw, 4 + 4 + len("blk.0.attn_q.weight") + 8 + 4 * 5, float("nan"))
    path.write_bytes(bytes(raw))
    with pytest.raises(QConvertError, match="non-finite sum .* at column 5"):
        read_imatrix(path)


@pytest.mark.parametrize("value", [1, ["LlamaTokenizer"], None, True])
def test_tokenizer_config_class_of_another_type(tmp_path, small_model, value):
    """transformers' AutoTokenizer raised AttributeError ('int' object has no attribute 'removesuffix')."""
    from qconvert.calib.build import load_tokenizer

    model = _model_copy(tmp_path, small_model)
    _edit_json(model / "tokenizer_config.json", lambda d: d.update(tokenizer_class=value))
    try:
        load_tokenizer(model)
    except QConvertError as exc:
        assert "\n" not in str(exc)


def test_tokenizer_config_chat_template_of_another_shape(tmp_path, small_model):
    from qconvert.hf.tokenizer import load_gguf_vocab

    model = _model_copy(tmp_path, small_model)
    _edit_json(model / "tokenizer_config.json", lambda d: d.update(chat_template=[1, 2]))
    with pytest.raises(QConvertError, match="chat_template"):  # was AttributeError: 'int' object has no attribute 'get'
        load_gguf_vocab(model, 4096, json.loads((model / "config.json").read_text()))


def test_calibration_values_are_checked(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from qconvert.calib.build import load_tokenizer
    from qconvert.calib.store import read_calibration

    path = seeds.write_calibration_seed(tmp_path / "c.safetensors", load_tokenizer(FIXTURE))
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    tensors = load_file(path)
    tensors["attention_mask"][0, 0] = 7
    save_file(tensors, path, metadata=metadata)
    with pytest.raises(QConvertError, match="attention_mask holds values other than 0 and 1"):
        read_calibration(path)


def test_gguf_huge_string_length_allocates_nothing(tmp_path):
    """The old reader re-read the file in growing buffers until a 2^40-byte string fit: on a real
    model, gigabytes. Now the length is checked against the file first."""
    import resource

    from qconvert.gguf_read import read_gguf_header

    path = seeds.write_gguf_model(tmp_path / "m.gguf")
    raw = bytearray(path.read_bytes())
    struct.pack_into("<Q", raw, 24, 2**40)
    path.write_bytes(bytes(raw))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(QConvertError, match="truncated GGUF: the key of metadata entry 0 is 1,099,511,627,776 bytes long, past the end of the file"):
        read_gguf_header(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 16 * 1024  # KiB


def test_gguf_array_count_checked_before_reading():
    import io

    from gguf import GGUFValueType

    from qconvert.gguf_read import _Bad, _Cursor, _read_value

    body = struct.pack("<IQ", int(GGUFValueType.UINT32), 2**61) + b"\0" * 64
    c = _Cursor(io.BytesIO(body), len(body))
    with pytest.raises(_Bad, match="more than the 64 bytes left"):
        _read_value(c, GGUFValueType.ARRAY, "x")


# --- issue 15's second round: tokenizer.model, GPTQ and AWQ checkpoints, recipes -------------------------

@pytest.fixture(scope="module")
def spm_model(small_model, tmp_path_factory):
    return seeds.make_spm_model(small_model, tmp_path_factory.mktemp("spm") / "model")


def _spm_vocab(model):
    from qconvert.hf.config import ModelConfig
    from qconvert.hf.tokenizer import load_gguf_vocab

    config = ModelConfig.from_dir(model)
    return load_gguf_vocab(model, config.vocab_size, config.raw)


def _spm_piece_field(model, piece: int, field: int):
    raw = (model / "tokenizer.model").read_bytes()
    label = f"model.piece[{piece}].{field} "
    return raw, next(f for f in seeds.protobuf_fields(raw) if f.label.startswith(label) and not f.label.endswith(("tag", "length")))


def test_spm_piece_of_invalid_utf8(tmp_path, spm_model):
    """Was UnicodeDecodeError from sentencepiece's IdToPiece: the library loads a piece's bytes unchecked."""
    model = _model_copy(tmp_path, spm_model)
    raw, text = _spm_piece_field(model, 300, 1)
    (model / "tokenizer.model").write_bytes(raw[: text.offset] + b"\xff" + raw[text.offset + 1 :])
    with pytest.raises(QConvertError, match="piece 300 of tokenizer.model is not UTF-8 text"):
        _spm_vocab(model)


def test_spm_byte_piece_of_invalid_utf8(tmp_path, spm_model):
    """Was UnicodeDecodeError from sentencepiece's LoadFromFile: its error about a damaged byte piece
    ("<0x47>") quotes the bytes, and the binding decodes the message as UTF-8."""
    model = _model_copy(tmp_path, spm_model)
    raw = (model / "tokenizer.model").read_bytes()
    piece = next(f for f in seeds.protobuf_fields(raw) if f.label.endswith(".1 bytes") and raw[f.offset : f.offset + 3] == b"<0x")
    (model / "tokenizer.model").write_bytes(raw[: piece.offset] + b"\x80" + raw[piece.offset + 1 :])
    with pytest.raises(QConvertError, match="sentencepiece cannot load it: a piece is not UTF-8 text"):
        _spm_vocab(model)


def test_spm_piece_of_nan_score(tmp_path, spm_model):
    """Was written into the GGUF as a NaN score, which llama.cpp ranks merges by."""
    model = _model_copy(tmp_path, spm_model)
    raw, score = _spm_piece_field(model, 300, 2)
    (model / "tokenizer.model").write_bytes(raw[: score.offset] + struct.pack("<f", float("nan")) + raw[score.offset + 4 :])
    with pytest.raises(QConvertError, match="piece 300 .* has the score nan"):
        _spm_vocab(model)


@pytest.mark.parametrize("decoder", [[1], {"x": {"content": "a"}}, {"5": "a"}, {"5": {"content": 7}}], ids=["list", "key", "entry", "content"])
def test_spm_added_tokens_decoder_of_another_shape(tmp_path, spm_model, decoder):
    """Was AttributeError / ValueError / TypeError in spm_vocab's added_tokens_decoder loop."""
    model = _model_copy(tmp_path, spm_model)
    _edit_json(model / "tokenizer_config.json", lambda d: d.update(added_tokens_decoder=decoder))
    with pytest.raises(QConvertError, match="added_tokens_decoder"):
        _spm_vocab(model)


@pytest.fixture(scope="module", params=["gptq", "awq"])
def quantized_model(request, small_model, tmp_path_factory):
    make = seeds.make_gptq_model if request.param == "gptq" else seeds.make_awq_model
    return make(small_model, tmp_path_factory.mktemp(request.param) / "model")


def _open_quantized(model):
    from qconvert.hf.config import ModelConfig
    from qconvert.hf.dequantized import open_checkpoint

    ckpt = open_checkpoint(model, ModelConfig.from_dir(model).raw)
    for name in ckpt.entries:
        ckpt.load(name)


def _edit_tensors(path, edit):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


LINEAR = "model.layers.0.mlp.down_proj"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.update({f"{LINEAR}.scales": t[f"{LINEAR}.scales"][:, :-1].copy()}), "do not fit together: scales"),  # was ValueError: broadcast
        (lambda t: t.update({f"{LINEAR}.qzeros": t[f"{LINEAR}.qzeros"][None].copy()}), "do not fit together"),  # was ValueError: unpack / IndexError
        (lambda t: t.update({f"{LINEAR}.qweight": t[f"{LINEAR}.qweight"][:-1].copy()}), "do not fit together"),  # was ValueError: broadcast
        (lambda t: t.update({f"{LINEAR}.qweight": t[f"{LINEAR}.qweight"].reshape(-1).copy()}), "not a non-empty matrix"),  # was IndexError in dense_shape
        (lambda t: t.update({f"{LINEAR}.scales": t[f"{LINEAR}.scales"].view("<i2").astype("<i4")}), "scales is I32"),
        (lambda t: t.pop(f"{LINEAR}.qweight"), "but no qweight"),  # was read as a dense tensor named ...qzeros
    ],
    ids=["scales-narrow", "qzeros-3d", "qweight-short", "qweight-1d", "scales-int", "no-qweight"],
)
def test_packed_tensors_that_do_not_fit(tmp_path, quantized_model, edit, message):
    model = _model_copy(tmp_path, quantized_model)
    _edit_tensors(model / "model.safetensors", edit)
    with pytest.raises(QConvertError, match=message):
        _open_quantized(model)


@pytest.mark.parametrize("value", [4, 2**31 - 1, -1, -(2**31)])
def test_gptq_g_idx_out_of_range(tmp_path, small_model, value):
    """Was IndexError from numpy (index 2147483647 is out of bounds for axis 0 with size 2)."""
    import numpy as np

    model = seeds.make_gptq_model(small_model, tmp_path / "gptq")

    def edit(t):
        g = t[f"{LINEAR}.g_idx"].copy()
        g[17] = value
        t[f"{LINEAR}.g_idx"] = g.astype(np.int32)

    _edit_tensors(model / "model.safetensors", edit)
    with pytest.raises(QConvertError, match=f"g_idx names group {value}, but the linear has 4 groups"):
        _open_quantized(model)


@pytest.mark.parametrize(
    "key, value, message",
    [("checkpoint_format", [1], "format \\[1\\]"), ("checkpoint_format", "A" * 5000, "format 'AAAA.*\\.\\.\\."), ("bits", "4", "bits is '4', not an integer"),
     ("bits", True, "not an integer"), ("bits", 5, "GPTQ bits 5")],
    ids=["format-list", "format-long", "bits-string", "bits-bool", "bits-5"],
)
def test_gptq_quantization_config_values(tmp_path, small_model, key, value, message):
    """Was TypeError (unhashable list), or an error line quoting a 5000-character value."""
    model = seeds.make_gptq_model(small_model, tmp_path / "gptq")
    _edit_json(model / "config.json", lambda c: c["quantization_config"].update({key: value}))
    with pytest.raises(QConvertError, match=message) as info:
        _open_quantized(model)
    assert len(str(info.value)) < 400


@pytest.mark.parametrize(
    "line, message",
    [
        ('path = "~nosuchuser/model"', "cannot expand '~nosuchuser/model'"),  # was RuntimeError: Could not determine home directory
        (f'path = "{"x" * 5000}"', "cannot look up .*File name too long"),  # was OSError from Path.is_file
        ('path = "a\\u0000b"', "holds a NUL character"),
        ('path = """\nmulti\nline"""', "no Hugging Face model folder .*multi\\\\nline"),  # was an error of two lines
        ('name = "../../outside"', "cannot name a folder"),  # was accepted: artefacts named ../../outside-*.gguf
    ],
    ids=["unknown-user", "long-path", "nul", "newline", "name-parent"],
)
def test_recipe_paths(tmp_path, small_model, line, message):
    from qconvert.pipeline.recipe import load_recipe

    folder = seeds.make_recipe_folder(small_model, tmp_path / "r")
    text = seeds.RECIPE.replace('name = "small"', line) if line.startswith("name") else seeds.RECIPE.replace('path = "model"', line)
    (folder / "case.toml").write_text(text)
    with pytest.raises(QConvertError, match=message) as info:
        load_recipe(folder / "case.toml")
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_recipe_value_quoted_short(tmp_path, small_model):
    """Was an error line quoting a 5000-character value whole."""
    from qconvert.pipeline.recipe import load_recipe

    folder = seeds.make_recipe_folder(small_model, tmp_path / "r")
    (folder / "case.toml").write_text(seeds.RECIPE.replace("n_samples = 8", f'n_samples = "{"x" * 5000}"'))
    with pytest.raises(QConvertError, match="must be an integer, not string 'xxx.*\\.\\.\\.") as info:
        load_recipe(folder / "case.toml")
    assert len(str(info.value)) < 400


@pytest.mark.parametrize(
    "rename, message",
    [
        (("model.layers.1.self_attn.k_proj.weight", None), "layer 1 lacks its tensor blk.1.attn_k.weight"),  # one layer short of what the others have
        (("model.layers.0.mlp.up_proj.weight", None), "layer 0 lacks its tensor blk.0.ffn_up.weight"),
        (("model.layers.0.input_layernorm.weight", "model.layers.9.input_layernorm.weight"), "is for layer 9, but config.json has num_hidden_layers"),
    ],
    ids=["attn-k", "ffn-up", "past-the-count"],
)
def test_incomplete_layers_are_refused_before_converting(tmp_path, rename, message):
    """Converted without the tensor, as llama.cpp's convert_hf_to_gguf.py does, llama.cpp then refused the file."""
    from safetensors.numpy import load_file, save_file

    from qconvert.convert.hf_to_gguf import ConvertOptions, convert_hf_to_gguf
    from qconvert.quant.file_types import FileType

    model = tmp_path / "model"
    shutil.copytree(FIXTURE, model)
    tensors = load_file(model / "model.safetensors")
    old, new = rename
    value = tensors.pop(old)
    if new:
        tensors[new] = value
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(QConvertError, match=message):
        convert_hf_to_gguf(model, tmp_path / "out.gguf", ConvertOptions(file_type=FileType.Q8_0, progress=False))
    assert not (tmp_path / "out.gguf").exists()
