"""A Hugging Face fast tokenizer (tokenizer.json + tokenizer_config.json) as llama.cpp's GGUF vocab.

Byte-level BPE tokenizers are converted here (GPT-2 style, as Qwen, Llama 3 and SmolLM use), and
SentencePiece ones (tokenizer.model: Llama 2, Mistral ≤ v0.3) by spm_vocab.py, see `load_gguf_vocab`;
their metadata follows the rules of llama.cpp's convert_hf_to_gguf.py (its gpt2 vocab path and
gguf-py's SpecialVocab):

* Pre-tokenizer (`tokenizer.ggml.pre`). First as llama.cpp does: encode CHKTXT, hash the str of
  the id list with sha256 and look the hash up in PRE_BY_CHKHSH, hashes llama.cpp lists for public
  models. A tokenizer trained by us hashes to nothing known, so then its tokenizer.json must match
  one of FAMILIES exactly: normalizer, pre_tokenizer (trim_offsets aside, which moves offsets only)
  and the BPE model's ignore_merges flag. Anything else is refused.
* Token types: a token of the model's vocab is NORMAL; an added token is CONTROL when special or
  when it looks special (`<|…|>`, `<｜…｜>`, `<unused…>`, a few fixed names), else USER_DEFINED
  with "▁" written as a space. A non-normalized added token is written as it decodes back
  (decode(encode(content))), as llama.cpp expects pre-normalized text. Rows of the embedding no
  token uses are "[PAD{id}]", UNUSED.
* Added tokens' flags are transformers': tokenizer_config.json's added_tokens_decoder overrides
  tokenizer.json's, and a token tokenizer_config names with a `*_token` key (bos_token, eos_token,
  pad_token, …) is special (see `_effective_added_tokens`).
* Special token ids, add_bos/add_eos/add_sep and the chat template: SpecialVocab's rules, see
  `_special_vocab`.

The check text is encoded with tokenizer.json as written (post-processor included, so Llama 3's BOS
counts), which is how llama.cpp's hashes were made. Known deviations, where transformers ≥5 (which
convert_hf_to_gguf.py loads the tokenizer with) builds something else than the files say: a
tokenizer class with its own pipeline (Qwen2Tokenizer, which it also picks for any model_type
"qwen2"; GPT2Tokenizer…) replaces tokenizer.json's normalizer and pre-tokenizer with the class's,
and special tokens tokenizer_config names that tokenizer.json lacks are appended as new tokens.
qconvert reads the files as written.
"""

import json
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

from gguf import GGUFWriter, TokenType

from qconvert.errors import QConvertError, caused_by_interrupt
from qconvert.hf import spm_vocab

# llama.cpp's check text (convert_hf_to_gguf_update.py): its tokenization tells pre-tokenizers apart.
CHKTXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 3 33 333 3333 "
    "33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на "
    "Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, "
    "'D you like some tea? We'Ve a'lL"
)

# sha256 of str(ids of CHKTXT) → `tokenizer.ggml.pre`, from llama.cpp's get_vocab_base_pre, for the
# byte-level BPE tokenizers of models whose architecture qconvert converts (Qwen2/3, Llama, Mistral).
PRE_BY_CHKHSH = {
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen/Qwen1.5-7B
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen/Qwen3-Embedding-0.6B
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": "deepseek-r1-qwen",  # deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # meta-llama/Meta-Llama-3-8B
    "c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d": "smaug-bpe",  # abacusai/Smaug-Llama-3-70B-Instruct
    "9d032fcbd5501f4a38150912590928bfb36091efb5df11b8e2124b0390e3fb1e": "falcon3",  # tiiuae/Falcon3-7B-Base (Llama)
    "049ecf7629871e3041641907f3de7c733e4dbfdc736f57d882ba0b0845599754": "deepseek-llm",  # deepseek-ai/deepseek-llm-7b-base (Llama)
    "347715f544604f9118bb75ed199f68779f423cabb20db6de6f31b908d04d7821": "deepseek-coder",  # deepseek-ai/deepseek-coder-6.7b-base (Llama)
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",  # mistralai/Mistral-Nemo-Base-2407
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",  # openai-community/gpt2
    "0fe1cf6eda062318a1af7270f3331a85c539a01778ff948e24388e949c5282f4": "gpt-2",  # evilfreelancer/ruGPT3XL
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # HuggingFaceTB/SmolLM-135M
}

_QWEN2_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_LLAMA3_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def _byte_level(use_regex: bool) -> dict:
    return {"type": "ByteLevel", "add_prefix_space": False, "use_regex": use_regex}


def _split(regex: str) -> dict:
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


@dataclass(frozen=True)
class Family:
    """A pre-tokenizer family as tokenizer.json spells it, in the canonical form of `_canonical`."""

    normalizer: dict | None
    pre_tokenizer: dict
    ignore_merges: bool  # llama.cpp's llama-bpe pre-tokenizer implies it, the others exclude it
    what: str


# The families a tokenizer unknown to PRE_BY_CHKHSH may belong to, by exact structure.
FAMILIES = {
    "qwen2": Family(
        {"type": "NFC"}, {"type": "Sequence", "parts": [_split(_QWEN2_REGEX), _byte_level(False)]}, False,
        "NFC + Qwen2's split regex (single digits) + ByteLevel",
    ),
    "llama-bpe": Family(
        None, {"type": "Sequence", "parts": [_split(_LLAMA3_REGEX), _byte_level(False)]}, True,
        "Llama 3's split regex (digits by three) + ByteLevel, ignore_merges",
    ),
    "gpt-2": Family(None, _byte_level(True), False, "plain ByteLevel with its GPT-2 regex"),
    "smollm": Family(
        None, {"type": "Sequence", "parts": [{"type": "Digits", "individual_digits": True}, _byte_level(True)]}, False,
        "Digits(individual_digits) + ByteLevel, as SmolLM and SmolLM2",
    ),
}

# Architectures whose set_vocab in convert_hf_to_gguf.py tries tokenizer.model first (LlamaModel,
# Qwen2Model and its Qwen3Model); None: a config without architectures. Qwen2/3-MoE take tokenizer.json.
SPM_FIRST = (None, "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")

# gguf-py's SpecialVocab: the special token types it reads, and those GGUFWriter has a key for.
SPECIAL_TOKEN_TYPES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
_WRITTEN_IDS = ("bos", "eos", "unk", "sep", "pad", "mask", "eot", "eom")  # cls has no GGUF key
_WRITTEN_ADDS = ("bos", "eos", "sep")
# Added tokens llama.cpp takes as control tokens though not marked special.
_LOOK_SPECIAL = ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
_NORMALIZER_LOWERCASE = "tokenizer.ggml.normalizer.lowercase"
_NORMALIZER_STRIP_ACCENTS = "tokenizer.ggml.normalizer.strip_accents"


@dataclass
class GGUFVocab:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    pre: str
    special_token_ids: dict[str, int] = field(default_factory=dict)  # SpecialVocab's types (bos, eos, …, eot, eom) → id
    add_special: dict[str, bool] = field(default_factory=dict)  # "bos"/"eos"/"sep"/… → add_{type}_token, where decided
    chat_template: str | list[dict[str, str]] | None = None  # a list: named templates, "default" first
    normalizer_lowercase: bool | None = None
    normalizer_strip_accents: bool | None = None
    add_space_prefix: bool | None = None  # tokenizer_config's add_prefix_space: llama.cpp writes it for llama only
    model: str = "gpt2"  # tokenizer.ggml.model: "llama" for a SentencePiece vocab (spm_vocab.py)
    scores: list[float] | None = None  # SentencePiece scores, written where set

    @property
    def special_ids(self) -> dict[str, int]:
        """The ids of bos, eos, unk and pad, where set."""
        return {k: v for k, v in self.special_token_ids.items() if k in ("bos", "eos", "unk", "pad")}

    @property
    def add_bos(self) -> bool:
        return self.add_special.get("bos", False)

    @property
    def add_eos(self) -> bool:
        return self.add_special.get("eos", False)


def write_vocab(w: GGUFWriter, vocab: GGUFVocab, arch: str) -> None:
    """The tokenizer keys of `vocab`, exactly those convert_hf_to_gguf.py writes for `arch`."""
    if arch == "llama" and vocab.add_space_prefix is not None:
        w.add_add_space_prefix(vocab.add_space_prefix)
    w.add_tokenizer_model(vocab.model)
    w.add_tokenizer_pre(vocab.pre)
    w.add_token_list(vocab.tokens)
    if vocab.scores is not None:
        w.add_token_scores(vocab.scores)
    w.add_token_types(vocab.token_types)
    if vocab.merges:
        w.add_token_merges(vocab.merges)
    for kind, token_id in vocab.special_token_ids.items():
        if kind in _WRITTEN_IDS:
            getattr(w, f"add_{kind}_token_id")(token_id)
    for kind, value in vocab.add_special.items():
        if kind in _WRITTEN_ADDS:
            getattr(w, f"add_add_{kind}_token")(value)
    if vocab.chat_template is not None:
        w.add_chat_template(vocab.chat_template)
    if vocab.normalizer_lowercase is not None:
        w.add_bool(_NORMALIZER_LOWERCASE, vocab.normalizer_lowercase)
    if vocab.normalizer_strip_accents is not None:
        w.add_bool(_NORMALIZER_STRIP_ACCENTS, vocab.normalizer_strip_accents)


_RESAVE = "re-save the tokenizer with save_pretrained"


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise QConvertError(f"unreadable {path.name}: {exc}", path, _RESAVE) from exc


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(_read_text(path))
    except (ValueError, RecursionError) as exc:  # ValueError: JSON errors, and ints past Python's digit limit
        raise QConvertError(f"unreadable {path.name}: {exc}", path, _RESAVE) from exc
    if not isinstance(data, dict):
        raise QConvertError(f"{path.name} holds a JSON {type(data).__name__}, not an object", path, _RESAVE)
    return data


def _template_or_none(template: Any, where: Path) -> str | list[dict[str, str]] | None:
    """A chat template as tokenizer_config.json may give it: text, or a list of named templates."""
    if template is None or isinstance(template, str):
        return template
    if isinstance(template, list) and all(isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("template"), str) for t in template):
        return template
    raise QConvertError("chat_template is neither text nor a list of {name, template} objects", where, _RESAVE)


def _token_content(value: Any) -> str | None:
    if isinstance(value, dict):
        content = value.get("content")
        return content if isinstance(content, str) else None
    return value if isinstance(value, str) else None


def read_chat_template(model_dir: Path, tok_config: dict[str, Any]) -> str | None:
    """The default chat template, chat_template.jinja first (transformers ≥4.43 saves it beside
    the config); for Ollama. The GGUF's template follows llama.cpp's rules, see `_chat_template`."""
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return _read_text(jinja)
    template = _template_or_none(tok_config.get("chat_template"), model_dir / "tokenizer_config.json")
    if isinstance(template, list):  # named templates: llama.cpp takes the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    return template if isinstance(template, str) else None


# --- The tokenizer as transformers (and so convert_hf_to_gguf.py) sees it ---------------------------


def _canonical(node: Any) -> Any:
    """The parts of a normalizer or pre_tokenizer that decide how text is split, defaults filled in."""
    if not isinstance(node, dict):
        return node
    kind = node.get("type")
    if kind == "Sequence":
        parts = node.get("pretokenizers", node.get("normalizers")) or []
        return {"type": kind, "parts": [_canonical(p) for p in parts]}
    if kind == "ByteLevel":  # trim_offsets moves offsets, not ids
        return {"type": kind, "add_prefix_space": node.get("add_prefix_space", True), "use_regex": node.get("use_regex", True)}
    if kind == "Split":
        return {"type": kind, "pattern": node.get("pattern"), "behavior": node.get("behavior"), "invert": node.get("invert", False)}
    if kind == "Digits":
        return {"type": kind, "individual_digits": node.get("individual_digits", False)}
    return node


def family_by_structure(tok_json: dict[str, Any]) -> str | None:
    """The FAMILIES entry tokenizer.json matches exactly, if any."""
    model = tok_json.get("model") or {}
    normalizer, pre = _canonical(tok_json.get("normalizer")), _canonical(tok_json.get("pre_tokenizer"))
    for name, family in FAMILIES.items():
        if normalizer == family.normalizer and pre == family.pre_tokenizer and bool(model.get("ignore_merges", False)) == family.ignore_merges:
            return name
    return None


def _effective_added_tokens(tok_json: dict[str, Any], tok_config: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """id → added token (content, special, normalized, …) with the flags transformers gives it.

    Its table of added tokens is tokenizer_config's added_tokens_decoder where there is one, else
    tokenizer.json's added_tokens: that table's flags win, and a token tokenizer_config names with
    a `*_token` key (or in an extra_special_tokens mapping) is special when the table has it."""
    added = {a["id"]: dict(a) for a in tok_json.get("added_tokens", []) if isinstance(a.get("id"), int)}
    table = added
    decoder = tok_config.get("added_tokens_decoder")
    if isinstance(decoder, dict):
        table = {int(k): v for k, v in decoder.items() if k.isascii() and k.isdecimal() and len(k) < 19 and isinstance(v, dict)}
        for token_id, entry in table.items():
            if token_id in added and entry.get("content") == added[token_id]["content"]:
                added[token_id].update({k: entry[k] for k in ("special", "normalized", "lstrip", "rstrip", "single_word") if k in entry})
    named = {_token_content(v) for k, v in tok_config.items() if k.endswith("_token")}
    if isinstance(tok_config.get("extra_special_tokens"), dict):
        named |= {_token_content(v) for v in tok_config["extra_special_tokens"].values()}
    in_table = {entry.get("content") for entry in table.values()}
    for token in added.values():
        if token["content"] in named and token["content"] in in_table:
            token["special"] = True
    return added


def check_rust_safe(tok_json: dict[str, Any], tok_path: Path) -> None:
    """Refuse what makes the `tokenizers` library abort the process instead of raising (0.23.3): a
    BPE model with a continuing_subword_prefix cuts that many bytes off each merge's second token,
    and a cut inside a character panics in Rust, which a destructor's second panic turns into
    SIGABRT. Called on the JSON before the library sees the file."""
    model = tok_json.get("model")
    if not isinstance(model, dict) or model.get("type") != "BPE":
        return
    prefix, merges = model.get("continuing_subword_prefix"), model.get("merges")
    if not isinstance(prefix, str) or not prefix or not isinstance(merges, list):
        return
    cut = len(prefix.encode("utf-8", "surrogatepass"))
    for merge in merges:
        second = merge.split(" ", 1)[-1] if isinstance(merge, str) else merge[1] if isinstance(merge, list) and len(merge) == 2 else None
        if not isinstance(second, str):
            continue
        try:
            second.encode("utf-8", "surrogatepass")[cut:].decode("utf-8")
        except UnicodeDecodeError:
            raise QConvertError(
                f"tokenizer.json's BPE merge {_cut(merge)}: cutting the continuing_subword_prefix {_cut(prefix)} off its second token splits a character",
                tok_path,
                _RESAVE,
            ) from None


def _cut(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _parse_tokenizer(tok_path: Path):
    """tokenizers' Tokenizer of tok_path. Its parser checks the file against tokenizer.json's schema
    (the model, added tokens, pre-tokenizer, post-processor, with their types), so the JSON read
    beside it has that structure where this module reads it."""
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(tok_path))
    except Exception as exc:  # the Rust side raises plain Exceptions
        if caused_by_interrupt(exc):
            raise
        raise QConvertError(f"tokenizers cannot load it: {(str(exc).splitlines() or [type(exc).__name__])[0][:300]}", tok_path, _RESAVE) from exc


def _set_added_flags(tk, added: dict[int, dict[str, Any]]):
    """`tk` with its added tokens' flags set to `added`'s."""
    from tokenizers import AddedToken

    current = tk.get_added_tokens_decoder()
    for token_id, token in added.items():
        have = current.get(token_id)
        flags = {k: bool(token.get(k, d)) for k, d in (("special", False), ("normalized", True), ("lstrip", False), ("rstrip", False), ("single_word", False))}
        if have is None or any(getattr(have, k) != v for k, v in flags.items()):
            tk.add_tokens([AddedToken(token["content"], **flags)])
    return tk


def chkhsh(tk) -> str:
    """llama.cpp's fingerprint of a tokenizer: sha256 of the str of the ids of CHKTXT."""
    return sha256(str(tk.encode(CHKTXT).ids).encode()).hexdigest()


def _pre_name(tk, tok_json: dict[str, Any], where: Path) -> str:
    digest = chkhsh(tk)
    if digest in PRE_BY_CHKHSH:
        return PRE_BY_CHKHSH[digest]
    family = family_by_structure(tok_json)
    if family is not None:
        return family
    known = "; ".join(f"{name}: {f.what}" for name, f in FAMILIES.items())
    raise QConvertError(
        f"tokenizer's pre-tokenizer is none llama.cpp knows to qconvert (check-text hash {digest[:16]}…)",
        where,
        f"known families, by exact tokenizer.json structure: {known}; or the tokenizer of a public model llama.cpp lists",
    )


def _looks_special(token: str) -> bool:
    return (
        token in _LOOK_SPECIAL
        or (token.startswith("<|") and token.endswith("|>"))
        or (token.startswith("<｜") and token.endswith("｜>"))
        or (token.startswith("<unused") and token.endswith(">"))
    )


def _merges(model: dict[str, Any], where: Path) -> list[str]:
    merges = model.get("merges") or []
    if not merges or isinstance(merges[0], str):
        return list(merges)
    if isinstance(merges[0], list) and len(merges[0]) == 2 and isinstance(merges[0][0], str):
        # pairs (transformers ≥4.45): a space inside a part is written as U+0120, as in GPT-2's alphabet
        return [" ".join("".join(chr(ord(c) + 256) if c == " " else c for c in part) for part in pair) for pair in merges]
    raise QConvertError("tokenizer.json merges are neither strings nor pairs", where)


def _chat_template(model_dir: Path, tok_config: dict[str, Any]) -> str | list[dict[str, str]] | None:
    """tokenizer_config's chat_template, else chat_template.jinja (with additional_chat_templates/ as
    named ones), else chat_template.json's."""
    alt: str | list[dict[str, str]] | None = None
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        alt = _read_text(jinja)
        extra = sorted((model_dir / "additional_chat_templates").glob("*.jinja"))
        if extra:
            alt = [{"name": "default", "template": alt}] + [{"name": p.stem, "template": _read_text(p)} for p in extra]
    elif (model_dir / "chat_template.json").is_file():
        alt = _template_or_none(_load_json(model_dir / "chat_template.json").get("chat_template"), model_dir / "chat_template.json")
    template = tok_config.get("chat_template", alt)
    if template is not None and not isinstance(template, (str, list)):
        return None
    return _template_or_none(template, model_dir / "tokenizer_config.json")


@dataclass
class _Specials:
    ids: dict[str, int] = field(default_factory=dict)
    add: dict[str, bool] = field(default_factory=dict)
    chat_template: str | list[dict[str, str]] | None = None


def _special_vocab(model_dir: Path, tok_json: dict[str, Any], tok_config: dict[str, Any] | None, model_config: dict[str, Any],
                   n_vocab: int | None = None) -> _Specials:
    """gguf-py SpecialVocab's rules. Special token ids: tokenizer_config's `{type}_token` looked up
    among tokenizer.json's added tokens (first match), then config.json's `{type}_token_id`; the
    first found wins, a negative one is refused, one ≥ n_vocab (where given) skipped. add_bos/add_eos/add_sep: from the post-processor
    (ByteLevel: neither; TemplateProcessing: the special tokens around $A, and a separator between
    $A and $B in the pair template), else tokenizer_config's add_{type}_token. A template whose last
    token is not eos_token makes that the eos, the old eos becoming eot (or eom)."""
    out = _Specials()
    types = list(SPECIAL_TOKEN_TYPES)
    cfg = dict(tok_config) if tok_config is not None else None
    added_tokens = tok_json.get("added_tokens", [])

    def set_id(kind: str, token_id: Any) -> None:
        if not isinstance(token_id, int):
            return
        if not 0 <= token_id < 2**32:  # GGUF keeps the ids as uint32
            raise QConvertError(f"special token {kind} has id {token_id}", model_dir, "fix the *_token_id fields of config.json")
        if n_vocab is None or token_id < n_vocab:
            out.ids.setdefault(kind, token_id)

    bos, cls_, eos, sep = ((cfg or {}).get(f"{k}_token") for k in ("bos", "cls", "eos", "sep"))
    if not bos and cls_ and cfg and tok_json:  # SpecialVocab does this only with a tokenizer.json
        cfg["bos_token"] = bos = cls_
    if not eos and sep and cfg and tok_json:
        cfg["eos_token"] = eos = sep
    post = tok_json.get("post_processor") or {}
    for proc in post.get("processors", [post]) if post else []:
        kind = proc.get("type")
        if kind == "ByteLevel":
            out.add.setdefault("bos", False)
            out.add.setdefault("eos", False)
        elif kind == "RobertaProcessing":
            out.add.update(bos=True, eos=True, sep=True)
            if not cls_ and cfg:
                cfg["cls_token"] = cls_ = proc.get("cls", [bos])[0]
            if not sep and cfg:
                cfg["sep_token"] = sep = proc.get("sep", [eos])[0]
        elif kind == "TemplateProcessing":
            single, pair = proc.get("single", []), proc.get("pair", [])
            first = last = None
            if len(single) > 1:
                if first := single[0].get("SpecialToken", {}).get("id"):
                    if not cfg:
                        bos = first
                    elif first not in (bos, cls_):
                        if not bos:
                            cfg["bos_token"] = bos = first
                        if not cls_:
                            cfg["cls_token"] = cls_ = first
                    out.add["bos"] = first in (bos, cls_)
                if last := single[-1].get("SpecialToken", {}).get("id"):
                    if not cfg:
                        eos = last
                    elif last != eos:
                        if "eot" not in types:
                            types.append("eot")
                            cfg["eot_token"] = eos
                        elif "eom" not in types:
                            types.append("eom")
                            cfg["eom_token"] = eos
                        cfg["eos_token"] = eos = last
                    out.add["eos"] = last == eos
            if pair:
                start = 1 if first and pair[0].get("SpecialToken", {}).get("id") == first else 0
                stop = -1 if last and pair[-1].get("SpecialToken", {}).get("id") == last else None
                pair = pair[start:stop]
                if pair and pair[0].get("Sequence", {}).get("id") == "A" and pair[-1].get("Sequence", {}).get("id") == "B" and (middle := pair[1:-1]):
                    add_sep = False
                    if (entry := middle[0].get("SpecialToken", {}).get("id")) and entry in (sep, eos) and not last:
                        add_sep = True
                    if len(middle) == 2 and (entry := middle[1].get("SpecialToken", {}).get("id")) and entry in (sep, eos):
                        add_sep = True
                    out.add["sep"] = add_sep
                    if add_sep and not sep and cfg:
                        cfg["sep_token"] = eos
    if cfg:
        out.chat_template = _chat_template(model_dir, cfg)
        for kind in types:
            flag = cfg.get(f"add_{kind}_token")
            if isinstance(flag, bool):
                out.add.setdefault(kind, flag)
            content = _token_content(cfg.get(f"{kind}_token"))
            if content is not None:
                set_id(kind, next((a.get("id") for a in added_tokens if a.get("content") == content), None))
    for kind in types:
        token_id = model_config.get(f"{kind}_token_id")
        if token_id is None and isinstance(model_config.get("text_config"), dict):
            token_id = model_config["text_config"].get(f"{kind}_token_id")
        set_id(kind, token_id)
    return out


def _normalizer_flags(node: Any, flags: dict[str, bool]) -> dict[str, bool]:
    if isinstance(node, dict):
        kind = node.get("type")
        if kind == "Lowercase":
            flags["lowercase"] = True
        elif kind == "StripAccents":
            flags["strip_accents"] = True
        elif kind == "BertNormalizer":
            for key in ("lowercase", "strip_accents"):
                if key in node:
                    flags[key] = node[key]
        elif kind == "Sequence":
            for sub in node.get("normalizers", []):
                _normalizer_flags(sub, flags)
    return flags


@dataclass
class _Tokenizer:
    path: Path  # tokenizer.json
    json: dict[str, Any]
    config: dict[str, Any] | None  # tokenizer_config.json, None without one
    added: dict[int, dict[str, Any]]  # id → added token, flags as transformers has them
    tk: Any  # tokenizers.Tokenizer, as transformers would encode with it


def _load_tokenizer(model_dir: Path) -> _Tokenizer:
    tok_path = model_dir / "tokenizer.json"
    if not tok_path.is_file():
        raise QConvertError("missing tokenizer.json", model_dir, "qconvert needs the Hugging Face fast tokenizer saved with the model")
    tok_json = _load_json(tok_path)
    model = tok_json.get("model") if isinstance(tok_json.get("model"), dict) else {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        what = f"tokenizer model is {_cut(model.get('type'))}" if model.get("type") != "BPE" else "tokenizer is a BPE with byte fallback or subword affixes"
        raise QConvertError(what, tok_path, "qconvert converts byte-level BPE tokenizers (Qwen, Llama 3, GPT-2, SmolLM), and SentencePiece ones saved as tokenizer.model")
    tk = _parse_tokenizer(tok_path)  # before the code below: it checks the structure that code reads
    config_path = model_dir / "tokenizer_config.json"
    tok_config = _load_json(config_path) if config_path.is_file() else None
    added = _effective_added_tokens(tok_json, tok_config or {})
    return _Tokenizer(tok_path, tok_json, tok_config, added, _set_added_flags(tk, added))


def check_text_hash(model_dir: Path) -> str:
    """The check-text hash llama.cpp's converter computes for the tokenizer of `model_dir`."""
    return chkhsh(_load_tokenizer(model_dir).tk)


def load_gguf_vocab(model_dir: Path, vocab_size: int, model_config: dict[str, Any]) -> GGUFVocab:
    """Build the GGUF vocab of `model_dir`, padded with unused tokens to the model's `vocab_size` rows.

    As llama.cpp's converter: an architecture in SPM_FIRST (or none named) with a tokenizer.model
    gets the SentencePiece vocab (spm_vocab.py); the others, and checkpoints without one, the
    byte-level BPE vocab of tokenizer.json."""
    architectures = model_config.get("architectures") or [None]
    if architectures[0] in SPM_FIRST and spm_vocab.has_spm(model_dir):
        return spm_vocab.load_spm_vocab(model_dir, vocab_size, model_config)
    loaded = _load_tokenizer(model_dir)
    tok_path, tok_json, tk, added = loaded.path, loaded.json, loaded.tk, loaded.added
    tok_config = loaded.config or {}
    model = tok_json["model"]
    pre = _pre_name(tk, tok_json, tok_path)

    by_id = {i: t for t, i in tk.get_vocab(with_added_tokens=True).items()}
    if by_id and max(by_id) >= vocab_size:
        raise QConvertError(f"tokenizer has token id {max(by_id)} but the model has only {vocab_size} embedding rows", tok_path)
    tokens, token_types = [], []
    for i in range(vocab_size):
        token = by_id.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            token_types.append(int(TokenType.UNUSED))
            continue
        kind = TokenType.NORMAL
        if i in added:
            if not added[i].get("normalized", True):  # llama.cpp expects added tokens pre-normalized
                token = tk.decode(tk.encode(token, add_special_tokens=False).ids, skip_special_tokens=False)
            if added[i].get("special") or _looks_special(token):
                kind = TokenType.CONTROL
            else:
                token = token.replace("\u2581", " ")  # pre-normalize user-defined spaces
                kind = TokenType.USER_DEFINED
        tokens.append(token)
        token_types.append(int(kind))

    specials = _special_vocab(model_dir, tok_json, loaded.config, model_config)
    norm = _normalizer_flags(tok_json.get("normalizer"), {})
    return GGUFVocab(
        tokens=tokens,
        token_types=token_types,
        merges=_merges(model, tok_path),
        pre=pre,
        special_token_ids=specials.ids,
        add_special=specials.add,
        chat_template=specials.chat_template,
        normalizer_lowercase=norm.get("lowercase"),
        normalizer_strip_accents=norm.get("strip_accents"),
        add_space_prefix=tok_config.get("add_prefix_space"),
    )
