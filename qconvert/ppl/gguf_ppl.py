"""Perplexity of a GGUF file, measured by the bundled llama-perplexity and parsed from its log."""

import re
import tempfile
from pathlib import Path

from qconvert.errors import QConvertError
from qconvert.llama_cpp import run_tool
from qconvert.ppl.result import PplOptions, PplResult

_FINAL = re.compile(r"Final estimate: PPL = ([\d.]+) \+/- ([\d.]+)")
_CHUNKS = re.compile(r"calculating perplexity over (\d+) chunks")
_KLD_CHUNKS = re.compile(r"computing over (\d+) chunks")
_MEAN_PPL_Q = re.compile(r"Mean PPL\(Q\)\s*:\s*([\d.]+)\s*±\s*(\S+)")
_MEAN_KLD = re.compile(r"Mean\s+KLD:\s*(-?[\d.]+)")
_SAME_TOP = re.compile(r"Same top p:\s*([\d.]+) ±")
_TOO_SHORT = re.compile(r"you need at least (\d+) tokens")


def _scored_per_chunk(ctx: int) -> int:
    return ctx - ctx // 2 - 1  # llama-perplexity scores the second half of each chunk


def _common_args(options: PplOptions) -> list[str]:
    args = ["-c", str(options.ctx)]
    if options.chunks:
        args += ["--chunks", str(options.chunks)]
    if options.threads:
        args += ["-t", str(options.threads)]
    return args


def _run(model: Path, args: list[str], text: Path) -> str:
    proc = run_tool("llama-perplexity", ["-m", str(model), *args])
    log = proc.stdout + proc.stderr
    short = _TOO_SHORT.search(log)  # llama-perplexity says so, yet exits 0
    if short:
        raise QConvertError(
            f"text too short: perplexity needs at least {short.group(1)} tokens (two chunks)", text, "give a longer text or a smaller --ctx"
        )
    return log


def _find(pattern: re.Pattern, log: str, model: Path) -> re.Match:
    m = pattern.search(log)
    if not m:
        raise QConvertError("could not read llama-perplexity's result from its output", model)
    return m


def gguf_perplexity(model: Path, text: Path, options: PplOptions, kld_base: Path | None = None) -> PplResult:
    if kld_base is None:
        log = _run(model, ["-f", str(text), *_common_args(options)], text)
        final = _find(_FINAL, log, model)
        chunks = int(_find(_CHUNKS, log, model).group(1))
        return PplResult(float(final.group(1)), float(final.group(2)), chunks * _scored_per_chunk(options.ctx), options.ctx, chunks)

    with tempfile.TemporaryDirectory(prefix="qconvert-kld-") as tmp:
        base_logits = Path(tmp) / "base.kld"
        # First pass stores the base model's tokens and log-probs; the second compares against them.
        _run(kld_base, ["-f", str(text), "--kl-divergence-base", str(base_logits), *_common_args(options)], text)
        log = _run(model, ["--kl-divergence-base", str(base_logits), "--kl-divergence", *_common_args(options)], text)
    mean = _find(_MEAN_PPL_Q, log, model)
    chunks = int(_find(_KLD_CHUNKS, log, model).group(1))
    return PplResult(
        ppl=float(mean.group(1)),
        ppl_err=float(mean.group(2)),
        n_tokens=chunks * _scored_per_chunk(options.ctx),
        ctx=options.ctx,
        chunks=chunks,
        kld_mean=float(_find(_MEAN_KLD, log, model).group(1)),
        same_top_p=float(_find(_SAME_TOP, log, model).group(1)) / 100,
    )
