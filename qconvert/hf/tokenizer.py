"""A Hugging Face fast tokenizer (tokenizer.json + tokenizer_config.json) as llama.cpp's GGUF vocab.

Only byte-level BPE tokenizers (GPT-2 style, as Qwen and Llama 3 use) are supported; which
llama.cpp pre-tokenizer they match is decided by their split regex, from the table below.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf import TokenType

from qconvert.errors import QConvertError

# The pre-tokenizer split regex of a tokenizer.json → llama.cpp's `tokenizer.ggml.pre` name.
PRE_TOKENIZER_BY_REGEX = {
    # Qwen2 / Qwen2.5 / Qwen3: single digits
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
    # Llama 3 / 3.1 / 3.2: digits in groups of up to three
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",
}
# A plain ByteLevel pre-tokenizer with its built-in regex is GPT-2's.
GPT2_PRE = "gpt-2"
SPECIAL_TOKEN_KEYS = ("bos", "eos", "unk", "pad")


@dataclass
class GGUFVocab:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    pre: str
    special_ids: dict[str, int] = field(default_factory=dict)  # "bos"/"eos"/"unk"/"pad" → id
    add_bos: bool = False
    add_eos: bool = False
    chat_template: str | None = None


def _load_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QConvertError(f"unreadable {path.name}: {exc}", path, "re-save the tokenizer with save_pretrained") from exc


def _split_regex(pre: dict[str, Any] | None) -> str | None:
    """The split regex of a tokenizer.json pre_tokenizer, or GPT2_PRE for a regex-using ByteLevel."""
    if not pre:
        return None
    if pre.get("type") == "Sequence":
        for sub in pre.get("pretokenizers", []):
            found = _split_regex(sub)
            if found:
                return found
        return None
    if pre.get("type") == "Split":
        return (pre.get("pattern") or {}).get("Regex")
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return GPT2_PRE
    return None


def _pre_name(tok_json: dict[str, Any], path: Path) -> str:
    regex = _split_regex(tok_json.get("pre_tokenizer"))
    if regex == GPT2_PRE:
        return GPT2_PRE
    if regex in PRE_TOKENIZER_BY_REGEX:
        return PRE_TOKENIZER_BY_REGEX[regex]
    raise QConvertError(
        "tokenizer's pre-tokenizer matches none that llama.cpp knows to qconvert",
        path,
        f"known: {', '.join(sorted(set(PRE_TOKENIZER_BY_REGEX.values()) | {GPT2_PRE}))}",
    )


def _token_content(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _adds_bos(tok_json: dict[str, Any], tok_config: dict[str, Any]) -> bool:
    """Whether encoding prepends a special token: tokenizer_config's flag, else the post-processor."""
    if isinstance(tok_config.get("add_bos_token"), bool):
        return tok_config["add_bos_token"]
    post = tok_json.get("post_processor") or {}
    procs = post.get("processors", [post]) if post.get("type") == "Sequence" else [post]
    for proc in procs:
        if proc.get("type") == "TemplateProcessing":
            single = proc.get("single") or []
            return bool(single) and "SpecialToken" in single[0]
    return False


def read_chat_template(model_dir: Path, tok_config: dict[str, Any]) -> str | None:
    """transformers ≥4.43 may save the template beside the config as chat_template.jinja."""
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    template = tok_config.get("chat_template")
    if isinstance(template, list):  # named templates: llama.cpp takes the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    return template if isinstance(template, str) else None


def load_gguf_vocab(model_dir: Path, vocab_size: int, model_config: dict[str, Any]) -> GGUFVocab:
    """Build the GGUF vocab of `model_dir`, padded with unused tokens to the model's `vocab_size` rows."""
    tok_path = model_dir / "tokenizer.json"
    if not tok_path.is_file():
        raise QConvertError("missing tokenizer.json", model_dir, "qconvert needs the Hugging Face fast tokenizer saved with the model")
    tok_json = _load_json(tok_path)
    config_path = model_dir / "tokenizer_config.json"
    tok_config = _load_json(config_path) if config_path.is_file() else {}

    model = tok_json.get("model") or {}
    if model.get("type") != "BPE":
        raise QConvertError(
            f"tokenizer model is {model.get('type')!r}", tok_path, "qconvert converts byte-level BPE tokenizers (Qwen, Llama 3)"
        )
    pre = _pre_name(tok_json, tok_path)

    by_id: dict[int, str] = {i: t for t, i in model.get("vocab", {}).items()}
    types: dict[int, int] = {i: TokenType.NORMAL for i in by_id}
    for added in tok_json.get("added_tokens", []):
        by_id[added["id"]] = added["content"]
        types[added["id"]] = TokenType.CONTROL if added.get("special") else TokenType.USER_DEFINED
    if by_id and max(by_id) >= vocab_size:
        raise QConvertError(
            f"tokenizer has token id {max(by_id)} but the model has only {vocab_size} embedding rows", tok_path
        )
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(vocab_size)]
    token_types = [int(types.get(i, TokenType.UNUSED)) for i in range(vocab_size)]

    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]

    ids_by_content = {t: i for i, t in by_id.items()}
    special_ids = {}
    for key in SPECIAL_TOKEN_KEYS:
        content = _token_content(tok_config.get(f"{key}_token"))
        if content in ids_by_content:
            special_ids[key] = ids_by_content[content]
        elif isinstance(model_config.get(f"{key}_token_id"), int):
            special_ids[key] = model_config[f"{key}_token_id"]

    return GGUFVocab(
        tokens=tokens,
        token_types=token_types,
        merges=merges,
        pre=pre,
        special_ids=special_ids,
        add_bos=_adds_bos(tok_json, tok_config),
        add_eos=bool(tok_config.get("add_eos_token", False)),
        chat_template=read_chat_template(model_dir, tok_config),
    )
