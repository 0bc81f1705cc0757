"""Random-weight Llama-shaped checkpoints with the shapes real models have and the fixture lacks:
widths that group size 128 does not divide, grouped-query attention, tied embeddings. They share the
fixture's tokenizer, so one calibration file serves them all."""

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tests.variants import copy_tokenizer


def make_random_llama(dst: Path, hidden: int = 576, intermediate: int = 1536, layers: int = 2, heads: int = 9, kv_heads: int = 3, tied: bool = True, seed: int = 0, vocab: int = 4096) -> Path:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=1024,
        tie_word_embeddings=tied,
        bos_token_id=None,
        eos_token_id=0,
    )
    model = LlamaForCausalLM(config)
    dst.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(dst)
    copy_tokenizer(dst)
    return dst
