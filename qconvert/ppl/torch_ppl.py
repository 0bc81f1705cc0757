"""Perplexity of a Hugging Face checkpoint in torch, by llama-perplexity's method.

The whole text is tokenized once (special tokens added as the tokenizer does); it is cut into
`ctx`-token chunks; if the tokenizer adds BOS, each chunk's first token is overwritten with BOS;
only the second half of each chunk is scored: logits at positions ctx/2 .. ctx-2 predict tokens
ctx/2+1 .. ctx-1. PPL = exp(mean NLL), ± = sqrt(var(NLL)/(n-1))·PPL, as llama-perplexity reports.
"""

import math
from pathlib import Path

import torch
from tqdm import tqdm

from qconvert.errors import QConvertError
from qconvert.ppl.result import PplOptions, PplResult


def _load(model_dir: Path):
    import transformers
    from transformers import AutoTokenizer

    from qconvert.loading import load

    # Long texts are tokenized whole on purpose (then chunked); keep transformers' chatter out of reports.
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as exc:
        raise QConvertError(f"transformers cannot load the tokenizer: {exc}".splitlines()[0], model_dir) from exc
    return tokenizer, load(model_dir, torch.float32)  # GPTQ checkpoints are unpacked to dense weights


def tokenize_text(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=True)["input_ids"]


def chunk_token_ids(tokens: list[int], bos_id: int | None, options: PplOptions, text_path: Path) -> list[list[int]]:
    """The chunks llama-perplexity would evaluate."""
    ctx = options.ctx
    if len(tokens) < 2 * ctx:
        raise QConvertError(
            f"text too short: {len(tokens)} tokens, perplexity needs at least {2 * ctx} (two chunks of --ctx {ctx})",
            text_path,
            "give a longer text or a smaller --ctx",
        )
    n = len(tokens) // ctx
    if options.chunks:
        n = min(n, options.chunks)
    chunks = [tokens[i * ctx : (i + 1) * ctx] for i in range(n)]
    if bos_id is not None:
        for c in chunks:
            c[0] = bos_id
    return chunks


def _log_probs(model, ids: list[int]) -> torch.Tensor:
    """(ctx, vocab) float64 log-probabilities of the next token at each position."""
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    return torch.log_softmax(logits.double(), dim=-1)


def torch_perplexity(model_dir: Path, text_path: Path, options: PplOptions, kld_base: Path | None = None, progress: bool = True) -> PplResult:
    if options.threads:
        torch.set_num_threads(options.threads)
    tokenizer, model = _load(model_dir)
    base = _load(kld_base)[1] if kld_base else None
    tokens = tokenize_text(tokenizer, text_path.read_text(encoding="utf-8"))
    bos = tokenizer.bos_token_id if tokens and tokens[0] == tokenizer.bos_token_id else None
    chunks = chunk_token_ids(tokens, bos, options, text_path)

    first = options.ctx // 2
    nll_sum = nll2_sum = kld_sum = 0.0
    count = same_top = 0
    for ids in tqdm(chunks, desc="perplexity", unit="chunk", disable=not progress):
        logp = _log_probs(model, ids)[first:-1]  # (ctx/2 - 1, vocab): predictions of ids[first+1:]
        targets = torch.tensor(ids[first + 1 :])
        nll = -logp.gather(1, targets[:, None])[:, 0]
        nll_sum += nll.sum().item()
        nll2_sum += (nll * nll).sum().item()
        count += len(targets)
        if base is not None:
            base_logp = _log_probs(base, ids)[first:-1]
            kld_sum += (base_logp.exp() * (base_logp - logp)).sum().item()
            same_top += (base_logp.argmax(-1) == logp.argmax(-1)).sum().item()

    mean = nll_sum / count
    var = nll2_sum / count - mean * mean
    ppl = math.exp(mean)
    return PplResult(
        ppl=ppl,
        ppl_err=math.sqrt(max(var, 0.0) / (count - 1)) * ppl,
        n_tokens=count,
        ctx=options.ctx,
        chunks=len(chunks),
        kld_mean=kld_sum / count if base is not None else None,
        same_top_p=same_top / count if base is not None else None,
    )
