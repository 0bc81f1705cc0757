"""The bundled default calibration set: the one place that says what it is.

English prose, classical Chinese poems and Python code (`calibration/{en,zh,code}`, plain text)
plus the chat sample (`calibration/chat/sample.jsonl`, formatted with the model's own chat template;
left out, with a logged note, for a tokenizer without one). `calibration/eval/heldout-en.txt` is the
held-out perplexity text and is never part of it. Licences: `calibration/SOURCES.md`.
"""

import logging
from pathlib import Path

from qconvert.calib.options import SourceFormat, SourceSpec
from qconvert.errors import QConvertError

log = logging.getLogger(__name__)

# The folder sits beside the package in a source checkout (and in the editable install `make` does).
BUNDLED_DIR = Path(__file__).resolve().parent.parent.parent / "calibration"

# (path under calibration/, format)
DEFAULT_SET: tuple[tuple[str, SourceFormat], ...] = (
    ("en", SourceFormat.TEXT),
    ("zh", SourceFormat.TEXT),
    ("code", SourceFormat.TEXT),
    ("chat/sample.jsonl", SourceFormat.CHAT),
)


def default_sources(has_chat_template: bool) -> tuple[SourceSpec, ...]:
    if not BUNDLED_DIR.is_dir():
        raise QConvertError("the bundled calibration data is not here", BUNDLED_DIR, "pass --source, or run from a source checkout")
    specs = []
    for rel, fmt in DEFAULT_SET:
        if fmt is SourceFormat.CHAT and not has_chat_template:
            log.warning("the tokenizer has no chat template: the default set leaves out its chat part (calibration/%s)", rel)
            continue
        specs.append(SourceSpec(BUNDLED_DIR / rel, fmt, label=f"calibration/{rel}"))
    return tuple(specs)
