"""The one error type users see: what is wrong, where, and what to do about it.

The CLI prints it as a single line and exits with code 2; library callers can catch it.
"""

from pathlib import Path


class QConvertError(Exception):
    def __init__(self, what: str, where: object = None, hint: str | None = None):
        self.what = what
        self.where = where
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.where}: {self.what}" if self.where is not None else self.what
        return f"{text} ({self.hint})" if self.hint else text


def quoted(value: object, limit: int = 60) -> str:
    """A value as an error line quotes it: its repr (one line, whatever it holds), cut to `limit`
    characters — a damaged file can hold megabytes where a name or a number belongs."""
    text = repr(str(value) if isinstance(value, Path) else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def caused_by_interrupt(exc: BaseException | None) -> bool:
    """Whether a Ctrl-C is behind `exc`: libraries re-raise it as other errors (transformers turns an
    interrupted lazy import into an ImportError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False
