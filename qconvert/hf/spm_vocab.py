"""A SentencePiece vocabulary (tokenizer.model, as Llama 2 and Mistral ≤ v0.3 ship it) as
llama.cpp's GGUF "llama" tokenizer model.

The rules are those of llama.cpp's convert_hf_to_gguf.py (its sentencepiece vocab path and
gguf-py's SpecialVocab):

* `tokenizer.ggml.model` "llama", `tokenizer.ggml.pre` "default"; no merges.
* One row per embedding row (config.json's vocab_size). A row no piece uses is "[PAD{id}]", score
  -10000, UNUSED. A piece keeps its text and SentencePiece score; its type is UNKNOWN, CONTROL,
  UNUSED or BYTE by the piece's kind, else NORMAL (user-defined pieces included).
* added_tokens.json: each token overrides its row as written, score -1000, USER_DEFINED.
* tokenizer_config.json's added_tokens_decoder, after that: each entry overrides its row with its
  content, score -1000; CONTROL when marked special or when it looks special (`<|…|>`, …), else
  USER_DEFINED with "▁" written as a space.
* Added tokens whose id is past the embedding rows are left out, as llama.cpp does; a piece of
  the SentencePiece model past them is refused (llama.cpp would drop it and every piece after).
* Special token ids, add_bos/add_eos/add_sep, the chat template and normalizer flags: SpecialVocab's
  rules (tokenizer.json, where the checkpoint has one, for its added tokens and post-processor;
  tokenizer_config.json; config.json), ids past the embedding rows skipped.

The `sentencepiece` package reads tokenizer.model; it is imported only when a checkpoint has one.
"""

import logging
import math
from pathlib import Path
from typing import Any

from gguf import TokenType

from qconvert.errors import QConvertError

log = logging.getLogger(__name__)

SPM_FILE = "tokenizer.model"
_PAD_SCORE = -10000.0  # rows no piece uses
_ADDED_SCORE = -1000.0  # rows added_tokens.json or added_tokens_decoder set
_RESAVE = "re-save the tokenizer with save_pretrained"


def has_spm(model_dir: Path) -> bool:
    return (model_dir / SPM_FILE).is_file()


def _processor(path: Path):
    try:
        from sentencepiece import SentencePieceProcessor
    except ImportError as exc:
        raise QConvertError(
            "the checkpoint's tokenizer is a SentencePiece model, and the sentencepiece package is not installed",
            path,
            "pip install sentencepiece",
        ) from exc
    sp = SentencePieceProcessor()
    try:
        sp.LoadFromFile(str(path))
    except (OSError, RuntimeError) as exc:
        raise QConvertError(f"sentencepiece cannot load it: {exc}", path, _RESAVE) from exc
    except UnicodeDecodeError:  # the library's error quotes a damaged piece's bytes, which do not decode
        raise QConvertError("sentencepiece cannot load it: a piece is not UTF-8 text", path, _RESAVE) from None
    return sp


def _piece_type(sp, i: int) -> TokenType:
    if sp.IsUnknown(i):
        return TokenType.UNKNOWN
    if sp.IsControl(i):
        return TokenType.CONTROL
    if sp.IsUnused(i):
        return TokenType.UNUSED
    if sp.IsByte(i):
        return TokenType.BYTE
    return TokenType.NORMAL


def spm_tokens(model_dir: Path, vocab_size: int, tok_config: dict[str, Any] | None,
               load_json, looks_special) -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types of the `vocab_size` embedding rows."""
    path = model_dir / SPM_FILE
    sp = _processor(path)
    n_pieces = sp.GetPieceSize()
    if n_pieces > vocab_size:
        raise QConvertError(f"tokenizer.model has {n_pieces} pieces but the model has only {vocab_size} embedding rows", path)
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    scores = [_PAD_SCORE] * vocab_size
    types = [int(TokenType.UNUSED)] * vocab_size
    for i in range(n_pieces):
        try:
            tokens[i] = sp.IdToPiece(i)
        except UnicodeDecodeError as exc:  # the library keeps a piece's bytes as they are
            raise QConvertError(f"piece {i} of tokenizer.model is not UTF-8 text ({exc.reason} at byte {exc.start})", path, _RESAVE) from None
        scores[i], types[i] = sp.GetScore(i), int(_piece_type(sp, i))
        if not math.isfinite(scores[i]):  # GGUF keeps it, and llama.cpp would rank merges by it
            raise QConvertError(f"piece {i} ({tokens[i][:40]!r}) of tokenizer.model has the score {scores[i]}", path, _RESAVE)

    added_path = model_dir / "added_tokens.json"
    if added_path.is_file():
        for token, token_id in load_json(added_path).items():
            if not isinstance(token_id, int) or not 0 <= token_id < vocab_size:
                log.warning("added_tokens.json: %r has id %r, outside the %d embedding rows: left out", token, token_id, vocab_size)
                continue
            tokens[token_id], scores[token_id], types[token_id] = token, _ADDED_SCORE, int(TokenType.USER_DEFINED)

    decoder = (tok_config or {}).get("added_tokens_decoder") or {}
    config_path = model_dir / "tokenizer_config.json"
    if not isinstance(decoder, dict):
        raise QConvertError(f"added_tokens_decoder is a JSON {type(decoder).__name__}, not an object of id → token", config_path, _RESAVE)
    for key, entry in decoder.items():
        if not (key.isascii() and key.isdecimal() and len(key) < 19) or not isinstance(entry, dict) or not isinstance(entry.get("content"), str):
            shown = repr(key) if len(key) < 40 else repr(key[:37]) + "..."
            raise QConvertError(f"added_tokens_decoder entry {shown} is not an id with an object holding its \"content\" text", config_path, _RESAVE)
        token_id, token = int(key), entry["content"]
        if token_id >= vocab_size:
            log.warning("added_tokens_decoder: %r has id %d, outside the %d embedding rows: left out", token, token_id, vocab_size)
            continue
        if entry.get("special") or looks_special(token):
            kind = TokenType.CONTROL
        else:
            token = token.replace("\u2581", " ")  # pre-normalize user-defined spaces
            kind = TokenType.USER_DEFINED
        tokens[token_id], scores[token_id], types[token_id] = token, _ADDED_SCORE, int(kind)
    return tokens, scores, types


def load_spm_vocab(model_dir: Path, vocab_size: int, model_config: dict[str, Any]):
    """The GGUF vocab (tokenizer.GGUFVocab) of the SentencePiece model in `model_dir`."""
    from qconvert.hf import tokenizer as tok  # tokenizer.py dispatches here: import late

    config_path = model_dir / "tokenizer_config.json"
    tok_config = tok._load_json(config_path) if config_path.is_file() else None
    tokens, scores, types = spm_tokens(model_dir, vocab_size, tok_config, tok._load_json, tok._looks_special)
    json_path = model_dir / "tokenizer.json"
    tok_json = tok._load_json(json_path) if json_path.is_file() else {}
    specials = tok._special_vocab(model_dir, tok_json, tok_config, model_config, n_vocab=vocab_size)
    norm = tok._normalizer_flags(tok_json.get("normalizer"), {})
    return tok.GGUFVocab(
        tokens=tokens,
        token_types=types,
        merges=[],
        pre="default",
        special_token_ids=specials.ids,
        add_special=specials.add,
        chat_template=specials.chat_template,
        normalizer_lowercase=norm.get("lowercase"),
        normalizer_strip_accents=norm.get("strip_accents"),
        add_space_prefix=(tok_config or {}).get("add_prefix_space"),
        model="llama",
        scores=scores,
    )
