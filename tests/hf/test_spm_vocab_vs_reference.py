"""SentencePiece vocabularies (tokenizer.model, as Llama 2 and Mistral ≤ v0.3 ship them): qconvert's
GGUF "llama" vocab against llama.cpp's convert_hf_to_gguf.py, and llama.cpp's tokenization of it
against SentencePiece's own.

A small SentencePiece BPE model with byte fallback, control and user-defined symbols is trained
here and saved into random-weight Llama and Mistral checkpoints whose embeddings have more rows
than it has pieces: the Llama one as Llama 2 ships it (tokenizer.model, a tokenizer.json converted
from it with a BOS-adding post-processor, tokenizer_config.json with added_tokens_decoder), the
Mistral one with tokenizer.model and tokenizer_config.json only, plus added tokens past the pieces
(added_tokens.json, added_tokens_decoder). Both converters convert them and every metadata key
and tensor must agree.
"""

import json
import shutil
from pathlib import Path

import pytest
import sentencepiece as spm
from gguf import TokenType

from qconvert.errors import QConvertError
from qconvert.hf import tokenizer as tok
from tests.arch_models import _save_random, make_random_model
from tests.conftest import ROOT, convert
from tests.convert.test_against_convert_hf_to_gguf import COSMETIC_KEYS, reference_convert
from tests.convert.test_llama_cpp_loads import llama_cpp_token_ids
from tests.quant.gguf_compare import differences, metadata, metadata_differences

N_PIECES = 1000
USER_DEFINED = ["<tool>", "\u2581Emma\u2581Woodhouse"]
CONTROL = ["<ctl>", "[INST]", "[/INST]"]
CHAT_TEMPLATE = "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"
SENTENCES = [
    "Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy disposition.",
    "In 1816 there were 12345 readers;\n\n  two  spaces\tand a tab.",
    "Café naïve — 東京 🦙 ünïcödé, 3.14159!",
    " leading space and trailing space ",
]


def _special(content: str, special: bool = True) -> dict:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": special}


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory) -> Path:
    """A SentencePiece BPE model trained as Llama 2's was: identity normalization, whitespace kept,
    digits split, byte fallback; <unk> <s> </s> at 0-2, then the control and user-defined symbols."""
    out = tmp_path_factory.mktemp("spm")
    text = out / "train.txt"
    text.write_text((ROOT / "calibration" / "en" / "austen-emma.txt").read_text(encoding="utf-8")[:200_000], encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(out / "sp"), vocab_size=N_PIECES, model_type="bpe", byte_fallback=True,
        user_defined_symbols=USER_DEFINED, control_symbols=CONTROL, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        character_coverage=1.0, split_digits=True, allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", num_threads=1, minloglevel=2,
    )
    return out / "sp.model"


def _converted_tokenizer_json(sp_path: Path, dst: Path) -> None:
    """tokenizer.json as transformers converts tokenizer.model, with Llama 2's BOS post-processor."""
    from transformers import LlamaTokenizer

    saved = dst / "converted"
    LlamaTokenizer(vocab_file=str(sp_path)).save_pretrained(saved)
    data = json.loads((saved / "tokenizer.json").read_text(encoding="utf-8"))
    assert data["model"]["byte_fallback"] is True
    bos = {"SpecialToken": {"id": "<s>", "type_id": 0}}
    data["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
    }
    (dst / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    shutil.rmtree(saved)


def llama2_like(dst: Path, sp_path: Path) -> Path:
    sp = spm.SentencePieceProcessor(model_file=str(sp_path))
    _save_random("LlamaConfig", "LlamaForCausalLM", dst, 0, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2)
    shutil.copy(sp_path, dst / "tokenizer.model")
    _converted_tokenizer_json(sp_path, dst)
    config = {
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
        "legacy": False, "tokenizer_class": "LlamaTokenizer", "clean_up_tokenization_spaces": False, "chat_template": CHAT_TEMPLATE,
        # the pieces' own ids: <ctl> marked special (CONTROL anyway), <tool> not (USER_DEFINED, not NORMAL)
        "added_tokens_decoder": {"0": _special("<unk>"), "1": _special("<s>"), "2": _special("</s>"),
                                 str(sp.PieceToId("<ctl>")): _special("<ctl>"), str(sp.PieceToId("<tool>")): _special("<tool>", False)},
    }
    (dst / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return dst


def mistral_like(dst: Path, sp_path: Path) -> Path:
    make_random_model("mistral", dst)
    (dst / "tokenizer.json").unlink()  # the fixture's, copied by make_random_model: this one has none
    shutil.copy(sp_path, dst / "tokenizer.model")
    config = {
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "add_prefix_space": True, "tokenizer_class": "LlamaTokenizer", "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {
            "1": _special("<s>"), "2": _special("</s>"),  # <unk> not listed: it stays UNKNOWN
            str(N_PIECES): _special("<|im_start|>", False),  # looks special: CONTROL
            str(N_PIECES + 1): _special("\u2581user\u2581tok", False),  # USER_DEFINED, "▁" as spaces
            "99999": _special("<far>"),  # past the embedding rows: left out
        },
    }
    (dst / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (dst / "added_tokens.json").write_text(json.dumps({"<extra_0>": N_PIECES + 2, "<too_far>": 99999}), encoding="utf-8")
    return dst


MAKERS = {"llama2": llama2_like, "mistral": mistral_like}


@pytest.fixture(scope="module", params=list(MAKERS))
def converted(request, sp_model, tmp_path_factory, llama_tools):
    out = tmp_path_factory.mktemp(f"spm-{request.param}")
    model_dir = MAKERS[request.param](out / request.param, sp_model)
    ours = convert(model_dir, out / "ours.gguf")
    theirs = reference_convert(model_dir, out / "theirs.gguf")
    return request.param, model_dir, ours, theirs


def test_same_tensors_and_metadata_as_convert_hf_to_gguf(converted):
    _, model_dir, ours, theirs = converted
    assert differences(ours, theirs) == []
    assert metadata_differences(ours, theirs, ignore=COSMETIC_KEYS) == []
    meta = metadata(ours)
    assert meta["tokenizer.ggml.model"] == "llama" and meta["tokenizer.ggml.pre"] == "default"
    assert len(meta["tokenizer.ggml.tokens"]) == json.loads((model_dir / "config.json").read_text())["vocab_size"] > N_PIECES


def test_token_types_follow_the_pieces(converted, sp_model):
    name, model_dir, ours, _ = converted
    meta = metadata(ours)
    tokens, types, scores = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"], meta["tokenizer.ggml.scores"]
    kind = dict(zip(tokens, types))
    # llama2's added_tokens_decoder lists <unk> as special, which makes it CONTROL; mistral's does not
    assert kind["<unk>"] == (TokenType.CONTROL if name == "llama2" else TokenType.UNKNOWN)
    assert kind["<s>"] == kind["</s>"] == kind["[INST]"] == TokenType.CONTROL
    assert kind["<0x0A>"] == TokenType.BYTE
    assert kind["\u2581Emma\u2581Woodhouse"] == TokenType.NORMAL  # a user-defined piece, as llama.cpp writes it
    assert kind["<tool>"] == (TokenType.USER_DEFINED if name == "llama2" else TokenType.NORMAL)  # added_tokens_decoder's say
    assert meta["tokenizer.ggml.bos_token_id"] == 1 and meta["tokenizer.ggml.eos_token_id"] == 2
    assert meta["tokenizer.ggml.add_bos_token"] is True and meta["tokenizer.ggml.add_eos_token"] is False
    sp = spm.SentencePieceProcessor(model_file=str(sp_model))
    listed = {int(k) for k in json.loads((model_dir / "tokenizer_config.json").read_text())["added_tokens_decoder"]}
    assert scores[:N_PIECES] == pytest.approx([-1000.0 if i in listed else sp.GetScore(i) for i in range(N_PIECES)])  # listed: -1000
    assert tokens[-1] == f"[PAD{len(tokens) - 1}]" and types[-1] == TokenType.UNUSED and scores[-1] == -10000.0
    if name == "mistral":
        assert tokens[N_PIECES:N_PIECES + 3] == ["<|im_start|>", " user tok", "<extra_0>"]
        assert types[N_PIECES:N_PIECES + 3] == [TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.USER_DEFINED]
        assert scores[N_PIECES:N_PIECES + 3] == [-1000.0] * 3
        assert meta["tokenizer.ggml.add_space_prefix"] is True


@pytest.mark.parametrize("text", SENTENCES)
def test_llama_cpp_tokenizes_like_sentencepiece(converted, sp_model, tmp_path, text):
    _, _, ours, _ = converted
    path = tmp_path / "text.txt"
    path.write_text(text, encoding="utf-8")
    sp = spm.SentencePieceProcessor(model_file=str(sp_model))
    assert llama_cpp_token_ids(ours, path) == [sp.bos_id()] + sp.encode(text)


def test_dispatch_follows_llama_cpp(tmp_path, sp_model):
    """tokenizer.model first for Llama/Mistral/Qwen2/Qwen3, as their set_vocab does; Qwen2/3-MoE read
    tokenizer.json (here a byte-fallback BPE, which that path refuses)."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    shutil.copy(sp_model, model_dir / "tokenizer.model")
    _converted_tokenizer_json(sp_model, model_dir)
    for arch in ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"):
        assert tok.load_gguf_vocab(model_dir, 1024, {"architectures": [arch]}).model == "llama"
    for arch in ("Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM"):
        with pytest.raises(QConvertError, match="byte fallback"):
            tok.load_gguf_vocab(model_dir, 1024, {"architectures": [arch]})


def test_more_pieces_than_embedding_rows_is_one_clear_error(tmp_path, sp_model):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    shutil.copy(sp_model, model_dir / "tokenizer.model")
    with pytest.raises(QConvertError) as err:
        tok.load_gguf_vocab(model_dir, N_PIECES - 1, {"architectures": ["LlamaForCausalLM"]})
    assert err.value.where == model_dir / "tokenizer.model"
    assert f"{N_PIECES} pieces" in err.value.what
