"""Make tests/fixtures/tiny-qwen2 (or, with --arch llama, tiny-llama): a small but *trained* model from the bundled text.

A byte-level BPE tokenizer with Qwen2's pre-tokenizer regex and special tokens is trained on
calibration/{en,zh,code}, then a 4-layer model is trained on the same text for a few minutes of
CPU time. calibration/eval is held out; its loss is printed at the end. Seeded (data order and
initialisation); the result is committed, so later runs need not match it bit for bit.

--arch qwen2 (default): Qwen2ForCausalLM, hidden 256, GQA 4/2 heads, q/k/v biases, untied lm_head.
  Every 2-D weight's row length (256 or 768) is divisible by 256, so every k-quant applies.
  The tokenizer adds no BOS (as Qwen2's); config bos_token_id is null.
--arch llama: LlamaForCausalLM shaped like real checkpoints where the Qwen2 fixture is not: hidden
  384 (a multiple of 128, not of 256: k-quants fall back on those rows), intermediate 1024, GQA 6/2
  heads of 64, no biases, tied embeddings, rms_norm_eps 1e-5; 250 steps, about 9 minutes of 2 idle
  cores (2.1 s a step, against 1.2 for qwen2). Its tokenizer adds a BOS token,
  <|begin_of_text|>, in front of every text (a Llama 3 style post-processor), so BOS is one more
  special token and the BPE vocabulary one token smaller; every training window starts with BOS
  (its first token overwritten, as llama-perplexity does with each chunk). Its ChatML template
  starts with {{ bos_token }}, so apply_chat_template(tokenize=True) also starts with BOS.
Both have 4,000 tokenizer tokens, 4,096 embedding rows, and eos = pad = <|endoftext|>.

    python scripts/make_fixture_model.py [--arch qwen2|llama] [--steps N] [-o DIR]
"""

import argparse
import json
import math
import time
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

ROOT = Path(__file__).resolve().parent.parent
QWEN2_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
BOS = "<|begin_of_text|>"  # the Llama fixture's only extra special token
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHATML_BOS = "{{ bos_token }}" + CHATML  # a tokenizer that adds BOS: the template writes it, as Llama 3's does
BPE_VOCAB = 4000  # tokens the tokenizer knows, specials included
MODEL_VOCAB = 4096  # embedding rows: padded past the tokenizer, as Qwen2 checkpoints are
STEPS_LLAMA = 250

# The architectures, as data: the model classes, their shapes, and what differs in training.
ARCHS = {
    "qwen2": dict(
        config=Qwen2Config,
        model=Qwen2ForCausalLM,
        bos=False,
        steps=300,
        shape=dict(hidden_size=256, intermediate_size=768, num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, tie_word_embeddings=False),
    ),
    "llama": dict(
        config=LlamaConfig,
        model=LlamaForCausalLM,
        bos=True,
        steps=STEPS_LLAMA,
        shape=dict(hidden_size=384, intermediate_size=1024, num_attention_heads=6, num_key_value_heads=2, rms_norm_eps=1e-5, tie_word_embeddings=True),
    ),
}


def training_documents() -> list[str]:
    files = sorted(p for sub in ("en", "zh", "code") for p in (ROOT / "calibration" / sub).glob("*.txt"))
    if not files:
        raise SystemExit("no training text under calibration/{en,zh,code}")
    return [p.read_text(encoding="utf-8") for p in files]


def train_tokenizer(docs: list[str], bos: bool = False) -> PreTrainedTokenizerFast:
    specials = SPECIALS + [BOS] if bos else SPECIALS
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB - len(specials),
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer)
    if bos:  # Llama 3's way: the specials after the BPE vocabulary, BOS added by the post-processor
        tok.add_special_tokens(specials)
        tok.post_processor = processors.Sequence(
            [
                processors.ByteLevel(trim_offsets=False),
                processors.TemplateProcessing(
                    single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1", special_tokens=[(BOS, tok.token_to_id(BOS))]
                ),
            ]
        )
    # Special tokens after the BPE vocabulary, as in Qwen2's tokenizer.
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        **({"bos_token": BOS} if bos else {}),
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIALS[1:],
    )
    fast.add_special_tokens({"additional_special_tokens": SPECIALS[1:]})
    fast.chat_template = CHATML_BOS if bos else CHATML
    fast.model_max_length = 2048
    assert len(fast) == BPE_VOCAB, len(fast)
    return fast


def make_model(tok: PreTrainedTokenizerFast, arch: dict):
    config = arch["config"](
        vocab_size=MODEL_VOCAB,
        num_hidden_layers=4,
        max_position_embeddings=2048,
        rope_theta=10000.0,
        **arch["shape"],
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id if arch["bos"] else None,
    )
    return arch["model"](config)


def train(model, ids: torch.Tensor, steps: int, seqlen: int, batch: int, bos: int | None = None) -> None:
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)
    model.train()
    start = time.time()
    for step in range(steps):
        lr = 3e-3 * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in opt.param_groups:
            group["lr"] = max(lr, 3e-5)
        starts = torch.randint(0, len(ids) - seqlen - 1, (batch,), generator=gen)
        x = torch.stack([ids[s : s + seqlen] for s in starts])
        if bos is not None:
            x[:, 0] = bos
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 25 == 0 or step == steps - 1:
            print(f"step {step:4d}  loss {loss.item():.3f}  {time.time() - start:.0f}s", flush=True)


@torch.no_grad()
def heldout_loss(model, tok: PreTrainedTokenizerFast, seqlen: int, bos: int | None, train_ids: torch.Tensor) -> tuple[float, float]:
    """Mean next-token loss on calibration/eval in seqlen chunks, and the loss of the training text's unigram frequencies there."""
    texts = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "calibration" / "eval").glob("*.txt"))]
    ids = torch.tensor([t for text in texts for t in tok(text)["input_ids"]])
    chunks = ids[: len(ids) // seqlen * seqlen].view(-1, seqlen).clone()
    if bos is not None:
        chunks[:, 0] = bos
    loss = sum(model(input_ids=c[None], labels=c[None]).loss.item() for c in chunks) / len(chunks)
    counts = torch.bincount(train_ids, minlength=MODEL_VOCAB).double() + 1  # add-one smoothing
    unigram = -(counts / counts.sum()).log()[chunks[:, 1:]].mean().item()
    return loss, unigram


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=sorted(ARCHS), default="qwen2")
    ap.add_argument("-o", "--out", type=Path, help="default: tests/fixtures/tiny-ARCH")
    ap.add_argument("--steps", type=int, help="default: 300 (qwen2), %d (llama)" % STEPS_LLAMA)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    arch = ARCHS[args.arch]
    args.out = args.out or ROOT / "tests" / "fixtures" / f"tiny-{args.arch}"
    args.steps = args.steps or arch["steps"]

    torch.manual_seed(0)
    docs = training_documents()
    tok = train_tokenizer(docs, bos=arch["bos"])
    bos = tok.bos_token_id if arch["bos"] else None
    eos = tok.eos_token_id
    ids = torch.tensor([t for d in docs for t in tok(d)["input_ids"] + [eos]], dtype=torch.long)
    print(f"{len(docs)} documents, {len(ids)} training tokens, vocab {len(tok)} (+{MODEL_VOCAB - len(tok)} padding rows)")

    model = make_model(tok, arch)
    train(model, ids, args.steps, args.seqlen, args.batch, bos)
    model.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(args.out, safe_serialization=True)
    tok.save_pretrained(args.out)
    # Keep the chat template inside tokenizer_config.json, where every transformers version and vLLM look.
    config_path = args.out / "tokenizer_config.json"
    tok_config = json.loads(config_path.read_text())
    tok_config["chat_template"] = tok.chat_template
    config_path.write_text(json.dumps(tok_config, indent=2, ensure_ascii=False) + "\n")
    (args.out / "chat_template.jinja").unlink(missing_ok=True)
    print(f"saved {args.out}")
    loss, unigram = heldout_loss(model.float(), tok, args.seqlen, bos, ids)
    print(f"held-out loss {loss:.3f} (perplexity {math.exp(loss):.1f}) on calibration/eval; unigram level {unigram:.3f} ({math.exp(unigram):.1f})")


if __name__ == "__main__":
    main()
