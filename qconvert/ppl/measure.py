"""One entry point for perplexity: a .gguf goes to llama-perplexity, an HF folder to torch."""

from pathlib import Path

from qconvert.errors import QConvertError
from qconvert.ppl.result import PplOptions, PplResult


def _is_gguf(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".gguf"


def _check_model(path: Path) -> None:
    if not path.exists():
        raise QConvertError("no such model", path, "give a .gguf file or a Hugging Face model folder")
    if not (_is_gguf(path) or (path.is_dir() and (path / "config.json").is_file())):
        raise QConvertError("not a .gguf file or a Hugging Face model folder (with config.json)", path)


def measure_perplexity(model: Path, text: Path, options: PplOptions, kld_base: Path | None = None, progress: bool = True) -> PplResult:
    model, text = Path(model), Path(text)
    _check_model(model)
    if not text.is_file():
        raise QConvertError("no such text file", text, "give a UTF-8 text file with --text")
    try:
        text.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise QConvertError(f"text is not UTF-8 (byte {exc.start})", text, "give a UTF-8 text file with --text") from None
    if options.ctx < 8 or options.ctx % 2:
        raise QConvertError(f"--ctx {options.ctx} is not an even number of at least 8", "--ctx")
    if kld_base is not None:
        kld_base = Path(kld_base)
        _check_model(kld_base)
        if _is_gguf(kld_base) != _is_gguf(model):
            raise QConvertError("--kld-base must be the same kind as the model (both .gguf, or both HF folders)", kld_base)
    if _is_gguf(model):
        from qconvert.ppl.gguf_ppl import gguf_perplexity

        return gguf_perplexity(model, text, options, kld_base)
    from qconvert.ppl.torch_ppl import torch_perplexity

    return torch_perplexity(model, text, options, kld_base, progress)
