"""The model's tokenizer: loading it, fingerprinting it, and turning documents into token ids.

Text documents are tokenized as the tokenizer does by default (`add_special_tokens=True`: a BOS for
Llama-style tokenizers, nothing for Qwen). Chat documents are the chat template's text tokenized
with `add_special_tokens=False`, which is exactly what `apply_chat_template(tokenize=True)` does.

The tokenizer hash (`tokenizer_sha256`) is the sha256 of a canonical JSON of what the token ids of a
calibration set mean: every token string with its id (the vocabulary with the added tokens, as
`get_vocab()` gives it) and the chat template. It does not change when the same tokenizer is re-saved
or read by another `tokenizers` version, and it does change when any id means another token or the
chat samples would be formatted differently.
"""

import hashlib
import json
from pathlib import Path

from qconvert.calib.chat import render_chats
from qconvert.calib.options import ContentKind
from qconvert.calib.sources import Document
from qconvert.errors import QConvertError


def load_tokenizer(model_dir: Path):
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise QConvertError("no such model folder", model_dir, "give a Hugging Face model folder")
    import transformers
    from transformers import AutoTokenizer

    transformers.logging.set_verbosity_error()  # documents are tokenized whole on purpose
    try:
        return AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError, TypeError) as exc:
        raise QConvertError(f"transformers cannot load the tokenizer: {exc}".splitlines()[0], model_dir) from exc


def tokenizer_sha256(tokenizer) -> str:
    vocab = sorted((i, t) for t, i in tokenizer.get_vocab().items())
    payload = {"vocab": vocab, "chat_template": getattr(tokenizer, "chat_template", None)}
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def pad_token_id(tokenizer) -> int:
    """The id `samples` mode pads with: the pad token, else EOS, else 0 (the mask says it is padding)."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def document_texts(tokenizer, kind: ContentKind, documents: list[Document]) -> list[str]:
    """The text each document is tokenized from: itself, or its conversation in the chat template."""
    if kind is ContentKind.TEXT:
        return [d.value for d in documents]
    return render_chats(tokenizer, [d.value for d in documents], [d.where for d in documents])


def tokenize_texts(tokenizer, kind: ContentKind, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    encoded = tokenizer(texts, add_special_tokens=kind is ContentKind.TEXT, verbose=False)
    return [list(ids) for ids in encoded["input_ids"]]
