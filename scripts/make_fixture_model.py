"""Make tests/fixtures/tiny-qwen2: a small but *trained* Qwen2ForCausalLM from the bundled text.

A byte-level BPE tokenizer with Qwen2's pre-tokenizer regex and special tokens is trained on
calibration/{en,zh,code}, then a 4-layer Qwen2 (hidden 256, GQA 4/2 heads, q/k/v biases, untied
lm_head) is trained on the same text for a few minutes of CPU time. calibration/eval is held out.
Every 2-D weight's row length (256 or 768) is divisible by 256, so every k-quant applies.
Seeded (data order and initialisation); the result is committed, so later runs need not match it bit for bit.

    python scripts/make_fixture_model.py [--steps 300] [-o tests/fixtures/tiny-qwen2]
"""

import argparse
import json
import math
import time
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

ROOT = Path(__file__).resolve().parent.parent
QWEN2_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
BPE_VOCAB = 4000  # tokens the tokenizer knows, specials included
MODEL_VOCAB = 4096  # embedding rows: padded past the tokenizer, as Qwen2 checkpoints are


def training_documents() -> list[str]:
    files = sorted(p for sub in ("en", "zh", "code") for p in (ROOT / "calibration" / sub).glob("*.txt"))
    if not files:
        raise SystemExit("no training text under calibration/{en,zh,code}")
    return [p.read_text(encoding="utf-8") for p in files]


def train_tokenizer(docs: list[str]) -> PreTrainedTokenizerFast:
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
        vocab_size=BPE_VOCAB - len(SPECIALS),
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer)
    # Special tokens after the BPE vocabulary, as in Qwen2's tokenizer.
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIALS[1:],
    )
    fast.add_special_tokens({"additional_special_tokens": SPECIALS[1:]})
    fast.chat_template = CHATML
    fast.model_max_length = 2048
    assert len(fast) == BPE_VOCAB, len(fast)
    return fast


def make_model(tok: PreTrainedTokenizerFast) -> Qwen2ForCausalLM:
    config = Qwen2Config(
        vocab_size=MODEL_VOCAB,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    return Qwen2ForCausalLM(config)


def train(model: Qwen2ForCausalLM, ids: torch.Tensor, steps: int, seqlen: int, batch: int) -> None:
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
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 25 == 0 or step == steps - 1:
            print(f"step {step:4d}  loss {loss.item():.3f}  {time.time() - start:.0f}s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--out", type=Path, default=ROOT / "tests" / "fixtures" / "tiny-qwen2")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()

    torch.manual_seed(0)
    docs = training_documents()
    tok = train_tokenizer(docs)
    eos = tok.eos_token_id
    ids = torch.tensor([t for d in docs for t in tok(d)["input_ids"] + [eos]], dtype=torch.long)
    print(f"{len(docs)} documents, {len(ids)} training tokens, vocab {len(tok)} (+{MODEL_VOCAB - len(tok)} padding rows)")

    model = make_model(tok)
    train(model, ids, args.steps, args.seqlen, args.batch)
    model.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(args.out, safe_serialization=True)
    tok.save_pretrained(args.out)
    # Keep the chat template inside tokenizer_config.json, where every transformers version and vLLM look.
    config_path = args.out / "tokenizer_config.json"
    tok_config = json.loads(config_path.read_text())
    tok_config["chat_template"] = CHATML
    config_path.write_text(json.dumps(tok_config, indent=2, ensure_ascii=False) + "\n")
    (args.out / "chat_template.jinja").unlink(missing_ok=True)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
