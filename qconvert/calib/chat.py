"""Chat records: checked, then formatted with the model's own chat template, exactly as
`tokenizer.apply_chat_template(messages, tokenize=False)` does, and tokenized as its `tokenize=True`
path does (no extra special tokens: the template writes its own)."""

from typing import Any

from qconvert.errors import QConvertError

Messages = list[dict[str, Any]]


def check_messages(value: Any, where: str) -> Messages:
    """A record's `messages`: a non-empty list of {"role": str, "content": str, ...} objects."""
    if not isinstance(value, list) or not value:
        raise QConvertError("chat record's messages must be a non-empty list of {role, content} objects", where)
    for i, message in enumerate(value, 1):
        if not isinstance(message, dict):
            raise QConvertError(f"chat message {i} is not an object", where, 'each message is {"role": ..., "content": ...}')
        for key in ("role", "content"):
            if key not in message or message[key] is None:
                raise QConvertError(f"chat message {i} has no {key!r}", where, 'each message is {"role": ..., "content": ...}')
            if not isinstance(message[key], str):
                raise QConvertError(f"chat message {i} has a {key!r} that is not a string", where)
    return value


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def require_chat_template(tokenizer, where: object) -> None:
    if not has_chat_template(tokenizer):
        raise QConvertError(
            "chat data needs the model's chat template, and this tokenizer has none",
            where,
            "use a model whose tokenizer_config.json (or chat_template.jinja) has one, or give plain text",
        )


def render_chats(tokenizer, chats: list[Messages], wheres: list[str]) -> list[str]:
    """The chat template's text for each conversation."""
    try:
        return tokenizer.apply_chat_template(chats, tokenize=False)
    except Exception as batch_exc:  # jinja2 errors, or the template's own raise_exception(): find the record
        for chat, where in zip(chats, wheres):
            try:
                tokenizer.apply_chat_template(chat, tokenize=False)
            except Exception as exc:
                raise QConvertError(f"the chat template cannot format this record: {exc}".splitlines()[0], where) from exc
        raise QConvertError(f"the chat template failed: {batch_exc}".splitlines()[0], wheres[0] if wheres else None) from batch_exc
