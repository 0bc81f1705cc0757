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
