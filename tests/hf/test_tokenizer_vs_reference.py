"""Tokenizers as llama.cpp reads them: qconvert's GGUF vocab against llama.cpp's convert_hf_to_gguf.py.

A small byte-level BPE tokenizer of each pre-tokenizer family qconvert claims is trained here with
the tokenizers library, with special and non-special added tokens, and saved into a copy of the
fixture model; both converters then convert it and every metadata key and tensor must agree. The
reference does not know these tokenizers' check-text hashes, so it is told the family
($QCONVERT_REF_PRE); the hash path itself is exercised with the real vocabularies llama.cpp ships
(models/ggml-vocab-*.gguf), rebuilt as tokenizer.json files.
"""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from gguf import GGUFWriter, TokenType
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from qconvert.errors import QConvertError
from qconvert.gguf_read import read_gguf_header
from qconvert.hf import tokenizer as tok
from qconvert.llama_cpp import llama_cpp_source
from tests.conftest import FIXTURE, ROOT, convert
from tests.quant.gguf_compare import differences, metadata

COSMETIC_KEYS = {"general.name", "general.size_label"}  # the reference prettifies the folder name
TRAIN_TEXTS = [ROOT / "calibration" / "en" / "austen-emma.txt", ROOT / "calibration" / "code" / "shlex.py.txt", ROOT / "calibration" / "zh" / "song100.txt"]
QWEN2_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
LLAMA3_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
CHAT_TEMPLATE = json.loads((FIXTURE / "tokenizer_config.json").read_text())["chat_template"]


def family_pipeline(tk: Tokenizer, family: str) -> None:
    """The normalizer and pre-tokenizer of `family`, as its public tokenizers have them."""
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=family in ("gpt-2", "smollm"))
    tk.normalizer = normalizers.NFC() if family == "qwen2" else None
    if family == "gpt-2":
        tk.pre_tokenizer = byte_level
    elif family == "smollm":
        tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        regex = QWEN2_REGEX if family == "qwen2" else LLAMA3_REGEX
        tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False), byte_level])
    tk.decoder = decoders.ByteLevel()


def bos_template(bos: str, bos_id: int):
    """Llama 3's post-processor: BOS before each sequence."""
    return processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, bos_id)]),
    ])


def save_tokenizer(tk: Tokenizer, path: Path, family: str) -> None:
    """tk as tokenizer.json; llama-bpe's BPE ignores merges for whole-word tokens, as Llama 3's does."""
    data = json.loads(tk.to_str())
    data["model"]["ignore_merges"] = family == "llama-bpe"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


@dataclass
class Spec:
    family: str
    added: list[tuple[str, bool, bool]]  # content, special, normalized
    config: dict = field(default_factory=dict)  # tokenizer_config.json (chat template and class added)
    bos_post: str | None = None  # a BOS-adding post-processor with this token, else ByteLevel's
    decoder_overrides: dict[str, bool] = field(default_factory=dict)  # content → special, in added_tokens_decoder
    # The model it is saved with. transformers ≥5 gives a qwen2 model Qwen2Tokenizer, which rebuilds
    # Qwen2's pipeline whatever tokenizer.json says: the other families go with a Llama model.
    arch: str = "llama"


SPECS = {
    # Qwen2.5-like: ChatML specials; FIM tokens not marked special (CONTROL by looks); tool tokens
    # USER_DEFINED; a token tokenizer_config names as pad is special by that; a normalized one has
    # its "▁" written as spaces; a non-normalized one is written as it decodes ("Ġ" → " ").
    "qwen2": Spec("qwen2", [
        ("<|endoftext|>", True, False), ("<|im_start|>", True, False), ("<|im_end|>", True, False),
        ("<|fim_prefix|>", False, False), ("<|fim_middle|>", False, False), ("<tool_call>", False, False), ("</tool_call>", False, False),
        ("[PAD]", False, False), ("\u2581user\u2581words\u2581", False, True), ("\u0120spaced\u0120", False, False),
    ], {"eos_token": "<|im_end|>", "pad_token": "[PAD]", "extra_special_tokens": ["<|im_start|>", "<|im_end|>"]}, arch="qwen2"),
    # Llama 3-like: BOS added by the post-processor, ignore_merges.
    "llama-bpe": Spec("llama-bpe", [
        ("<|begin_of_text|>", True, False), ("<|end_of_text|>", True, False), ("<|reserved_special_token_0|>", True, False),
        ("<|eot_id|>", True, False), ("<|python_tag|>", False, False), ("<tool_call>", False, False),
    ], {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "tokenizer_class": "PreTrainedTokenizerFast"}, bos_post="<|begin_of_text|>"),
    # add_bos_token in tokenizer_config but a post-processor that adds nothing: llama.cpp's
    # SpecialVocab trusts the post-processor (add_bos_token false), and the hash ignores the flag.
    "llama-bpe-add-bos-flag": Spec("llama-bpe", [
        ("<|begin_of_text|>", True, False), ("<|end_of_text|>", True, False), ("<|eot_id|>", True, False),
    ], {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "add_bos_token": True, "add_eos_token": False}),
    # GPT-2: tokenizer_config's added_tokens_decoder marks <think> special though tokenizer.json
    # does not, and a token it lists that tokenizer_config names as unk_token is special too.
    "gpt-2": Spec("gpt-2", [
        ("<|endoftext|>", True, False), ("<|fim_prefix|>", False, False), ("<think>", False, False), ("<unk_named>", False, False),
    ], {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<unk_named>"}, decoder_overrides={"<think>": True}),
    # SmolLM2-like: single digits before ByteLevel; llama.cpp calls it smollm, not gpt-2.
    "smollm": Spec("smollm", [
        ("<|endoftext|>", True, False), ("<|im_start|>", True, False), ("<|im_end|>", True, False),
        ("<repo_name>", True, False), ("<file_sep>", True, False), ("<|fim_prefix|>", False, False), ("<empty_output>", False, False),
    ], {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>", "unk_token": "<|endoftext|>"}),
}


def trained_tokenizer(spec: Spec, vocab_size: int = 1200) -> Tokenizer:
    tk = Tokenizer(models.BPE())
    family_pipeline(tk, spec.family)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train([str(p) for p in TRAIN_TEXTS], trainer)
    for content, special, normalized in spec.added:
        tk.add_tokens([AddedToken(content, special=special, normalized=normalized)])
    bos = spec.bos_post
    tk.post_processor = bos_template(bos, tk.token_to_id(bos)) if bos else processors.ByteLevel(trim_offsets=False)
    return tk


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    """Random Llama weights with 2048 embedding rows, room for every tokenizer here."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=2048, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=512)
    out = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).to(torch.float16).save_pretrained(out)
    return out


def model_with_tokenizer(dst: Path, spec: Spec, weights: Path, tk: Tokenizer | None = None) -> Path:
    """The weights of `weights` (the fixture's for a qwen2 spec) with `spec`'s tokenizer, config.json's
    special ids pointing at its tokens."""
    tk = tk or trained_tokenizer(spec)
    weights = FIXTURE if spec.arch == "qwen2" else weights
    dst.mkdir(parents=True)
    shutil.copy(weights / "model.safetensors", dst / "model.safetensors")
    save_tokenizer(tk, dst / "tokenizer.json", spec.family)
    config = json.loads((weights / "config.json").read_text())
    for key in ("bos", "eos", "pad"):
        config[f"{key}_token_id"] = tk.token_to_id(spec.config[f"{key}_token"]) if f"{key}_token" in spec.config else None
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    tok_config = {"tokenizer_class": "TokenizersBackend", "chat_template": CHAT_TEMPLATE, **spec.config}
    if spec.decoder_overrides:
        tok_config["added_tokens_decoder"] = {
            str(i): {"content": a.content, "special": spec.decoder_overrides.get(a.content, a.special), "normalized": a.normalized,
                     "lstrip": a.lstrip, "rstrip": a.rstrip, "single_word": a.single_word}
            for i, a in tk.get_added_tokens_decoder().items()
        }
    (dst / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2, ensure_ascii=False))
    return dst


def reference(model_dir: Path, out: Path, pre: str = "none", vocab_only: bool = False) -> tuple[Path, str]:
    """llama.cpp's conversion of model_dir, and the check-text hash it computed."""
    hash_file = out.with_suffix(".chkhsh")
    cmd = [sys.executable, str(ROOT / "scripts" / "reference_convert.py"), str(model_dir), "--outtype", "f16", "--outfile", str(out)]
    env = {**os.environ, "QCONVERT_REF_PRE": pre, "QCONVERT_REF_CHKHSH": str(hash_file)}
    proc = subprocess.run(cmd + (["--vocab-only"] if vocab_only else []), capture_output=True, text=True, cwd=out.parent, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, hash_file.read_text()


def value_differences(ours: dict, theirs: dict) -> list[str]:
    problems = [f"key only in ours: {k}" for k in sorted(set(ours) - set(theirs))]
    problems += [f"key only in reference: {k}" for k in sorted(set(theirs) - set(ours))]
    for key in sorted(set(ours) & set(theirs)):
        a, b = ours[key], theirs[key]
        if a == b:
            continue
        if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            i = next(i for i in range(len(a)) if a[i] != b[i])
            problems.append(f"{key}[{i}]: {a[i]!r} != {b[i]!r}")
        else:
            problems.append(f"{key}: {str(a)[:80]!r} != {str(b)[:80]!r}")
    return problems


def assert_same_metadata(ours: dict, theirs: dict) -> None:
    problems = value_differences(ours, theirs)
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("name", list(SPECS))
def test_family_converts_like_convert_hf_to_gguf(llama_tools, tmp_path, tiny_llama, name):
    spec = SPECS[name]
    model_dir = model_with_tokenizer(tmp_path / "model", spec, tiny_llama)
    ours = convert(model_dir, tmp_path / "ours.gguf")
    theirs, their_hash = reference(model_dir, tmp_path / "theirs.gguf", pre=spec.family)

    assert metadata(ours)["tokenizer.ggml.pre"] == spec.family
    # the hash our lookup uses is the one convert_hf_to_gguf.py computed (then found in no table)
    assert tok.check_text_hash(model_dir) == their_hash
    assert differences(ours, theirs) == []
    assert_same_metadata(metadata(ours, COSMETIC_KEYS), metadata(theirs, COSMETIC_KEYS))


def test_token_types_follow_llama_cpp_rules(tmp_path, tiny_llama):
    spec = SPECS["qwen2"]
    vocab = tok.load_gguf_vocab(model_with_tokenizer(tmp_path / "model", spec, tiny_llama), 4096, {})
    types = dict(zip(vocab.tokens, vocab.token_types))
    assert types["<|im_end|>"] == TokenType.CONTROL  # special
    assert types["<|fim_prefix|>"] == TokenType.CONTROL  # not special, but looks it
    assert types["[PAD]"] == TokenType.CONTROL  # named pad_token by tokenizer_config
    assert types["<tool_call>"] == TokenType.USER_DEFINED
    assert types[" user words "] == TokenType.USER_DEFINED  # normalized: "▁" written as a space
    assert types[" spaced "] == TokenType.USER_DEFINED  # not normalized: written as it decodes
    assert vocab.tokens[-1] == "[PAD4095]" and vocab.token_types[-1] == TokenType.UNUSED


def test_smollm_digits_are_smollm_not_gpt2(tmp_path, tiny_llama):
    vocab = tok.load_gguf_vocab(model_with_tokenizer(tmp_path / "model", SPECS["smollm"], tiny_llama), 2048, {})
    assert vocab.pre == "smollm"


def test_unknown_pre_tokenizer_is_one_clear_error(tmp_path, tiny_llama):
    tk = trained_tokenizer(SPECS["qwen2"])
    tk.normalizer = None  # Qwen2's split without its NFC normalizer: no family of ours
    model_dir = model_with_tokenizer(tmp_path / "model", SPECS["qwen2"], tiny_llama, tk)
    with pytest.raises(QConvertError) as err:
        convert(model_dir, tmp_path / "ours.gguf")
    assert err.value.where == model_dir / "tokenizer.json"
    assert "pre-tokenizer" in err.value.what
    for family in ("qwen2", "llama-bpe", "gpt-2", "smollm"):
        assert family in err.value.hint
    assert not (tmp_path / "ours.gguf").exists()


def test_table_and_check_text_are_llama_cpps():
    source = (llama_cpp_source() / "conversion" / "base.py").read_text(encoding="utf-8")
    chktxt = re.search(r"^\s*chktxt = (.*)$", source, re.M).group(1)
    assert ast.literal_eval(chktxt) == tok.CHKTXT
    table = {}
    for digest, name in re.findall(r'if chkhsh == "([0-9a-f]{64})":\s*\n(?:\s*#[^\n]*\n)*\s*res = "([^"]+)"', source):
        table[digest] = name  # later entries win, as in get_vocab_base_pre
    assert {d: table.get(d) for d in tok.PRE_BY_CHKHSH} == tok.PRE_BY_CHKHSH


# --- The hash path with real vocabularies ----------------------------------------------------------

REAL_VOCABS = {  # llama.cpp's models/ggml-vocab-{name}.gguf → its tokenizer_config essentials
    "gpt-2": {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"},
    "llama-bpe": {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"},
    "qwen2": {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"},
}


def real_tokenizer_dir(dst: Path, family: str) -> Path:
    """A model folder (config and tokenizer only) whose tokenizer.json is rebuilt from the vocabulary,
    merges and token types llama.cpp ships for `family`, with that family's pipeline."""
    header = read_gguf_header(llama_cpp_source() / "models" / f"ggml-vocab-{family}.gguf")
    tokens, types = header.get("tokenizer.ggml.tokens"), header.get("tokenizer.ggml.token_type")
    vocab = {t: i for i, (t, ty) in enumerate(zip(tokens, types)) if ty == TokenType.NORMAL}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) for m in header.get("tokenizer.ggml.merges")]))
    family_pipeline(tk, family)
    for i, (t, ty) in enumerate(zip(tokens, types)):
        if ty in (TokenType.CONTROL, TokenType.USER_DEFINED) and not t.startswith("[PAD"):
            tk.add_tokens([AddedToken(t, special=ty == TokenType.CONTROL, normalized=False)])
            assert tk.token_to_id(t) == i
    bos = REAL_VOCABS[family]["bos_token"] if family == "llama-bpe" else None
    tk.post_processor = bos_template(bos, tk.token_to_id(bos)) if bos else processors.ByteLevel(trim_offsets=False)
    dst.mkdir(parents=True)
    save_tokenizer(tk, dst / "tokenizer.json", family)
    config = json.loads((FIXTURE / "config.json").read_text())  # qwen2; for the others, transformers ≥5 would
    if family != "qwen2":  # give it Qwen2Tokenizer, which replaces the tokenizer.json pipeline with Qwen2's
        config.update(architectures=["LlamaForCausalLM"], model_type="llama")
    config.update(vocab_size=len(tokens), bos_token_id=None, eos_token_id=None, pad_token_id=None)
    (dst / "config.json").write_text(json.dumps(config))
    (dst / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "TokenizersBackend", **REAL_VOCABS[family]}))
    return dst


@pytest.mark.parametrize("family", list(REAL_VOCABS))
def test_real_vocabulary_is_recognised_by_its_hash(llama_tools, tmp_path, monkeypatch, family):
    model_dir = real_tokenizer_dir(tmp_path / "model", family)
    config = json.loads((model_dir / "config.json").read_text())
    theirs, their_hash = reference(model_dir, tmp_path / "theirs.gguf", pre="none", vocab_only=True)  # no fallback

    monkeypatch.setattr(tok, "FAMILIES", {})  # the hash alone must decide
    vocab = tok.load_gguf_vocab(model_dir, config["vocab_size"], config)
    assert tok.PRE_BY_CHKHSH[their_hash] == vocab.pre == family
    ours = tmp_path / "ours.gguf"
    arch = "qwen2" if family == "qwen2" else "llama"
    w = GGUFWriter(ours, arch)
    tok.write_vocab(w, vocab, arch)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    pick = lambda path: {k: kv.value for k, kv in read_gguf_header(path).kv.items() if k.startswith("tokenizer.")}  # noqa: E731
    assert value_differences(pick(ours), pick(theirs)) == []


# --- SpecialVocab's rules beyond the families' usual files -----------------------------------------


@pytest.mark.parametrize("case", ["eos-at-end-becomes-eot", "roberta-separators", "named-templates", "lowercase-prefix-space"])
def test_special_vocab_rules_match_convert_hf_to_gguf(llama_tools, tmp_path, tiny_llama, monkeypatch, case):
    """write_vocab's tokenizer keys against the reference's, for post-processors and files the
    family tests do not have. The check-text hash is made known to both sides."""
    spec = Spec("gpt-2", [("<|endoftext|>", True, False), ("<s>", True, False), ("</s>", True, False), ("<sep>", True, False), ("<mask>", False, False)],
                {"bos_token": "<s>", "eos_token": "<|endoftext|>", "mask_token": "<mask>"})
    tk = trained_tokenizer(spec)
    ids = {t: tk.token_to_id(t) for t, *_ in spec.added}
    if case == "eos-at-end-becomes-eot":  # eos_token ≠ the template's last token: that one is eos, the old one eot
        tk.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A <sep> $B:1 </s>:1", special_tokens=[(t, ids[t]) for t in ("<s>", "</s>", "<sep>")])
    elif case == "roberta-separators":
        tk.post_processor = processors.RobertaProcessing(("</s>", ids["</s>"]), ("<s>", ids["<s>"]))
        spec.config = {"eos_token": "<|endoftext|>"}
    elif case == "lowercase-prefix-space":  # a normalizer flag, and add_prefix_space (llama writes it)
        tk.normalizer = normalizers.Lowercase()
        spec.config = {**spec.config, "add_prefix_space": False}
    model_dir = model_with_tokenizer(tmp_path / "model", spec, tiny_llama, tk)
    config = json.loads((model_dir / "config.json").read_text())
    if case == "named-templates":
        tok_config = json.loads((model_dir / "tokenizer_config.json").read_text())
        del tok_config["chat_template"]
        (model_dir / "tokenizer_config.json").write_text(json.dumps(tok_config))
        (model_dir / "chat_template.jinja").write_text("{{ messages }}")
        (model_dir / "additional_chat_templates").mkdir()
        (model_dir / "additional_chat_templates" / "tool_use.jinja").write_text("{{ tools }}")

    theirs, their_hash = reference(model_dir, tmp_path / "theirs.gguf", pre="gpt-2", vocab_only=True)
    monkeypatch.setitem(tok.PRE_BY_CHKHSH, their_hash, "gpt-2")
    vocab = tok.load_gguf_vocab(model_dir, config["vocab_size"], config)
    ours = tmp_path / "ours.gguf"
    w = GGUFWriter(ours, "llama")
    tok.write_vocab(w, vocab, "llama")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    pick = lambda path: {k: kv.value for k, kv in read_gguf_header(path).kv.items() if k.startswith("tokenizer.")}  # noqa: E731
    assert value_differences(pick(ours), pick(theirs)) == []
