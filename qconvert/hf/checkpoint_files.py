"""The files around a checkpoint's weights that a quantized copy carries over: the tokenizer and
generation files as they are, and config.json with a quantization_config added."""

import json
import shutil
from pathlib import Path
from typing import Any

# Every file transformers' tokenizers and generate() read; those present are copied.
COPIED_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)


def copy_tokenizer_files(src: Path, dst: Path) -> None:
    for name in COPIED_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)


def write_config(dst: Path, raw_config: dict[str, Any], quantization_config: dict[str, Any] | None, dtype: str = "float16") -> None:
    """config.json of the written checkpoint: the source's, with its dtype and quantization_config."""
    config = {k: v for k, v in raw_config.items() if k not in ("torch_dtype", "quantization_config")}
    config["dtype"] = dtype
    if quantization_config is not None:
        config["quantization_config"] = quantization_config
    write_json(dst / "config.json", config)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
