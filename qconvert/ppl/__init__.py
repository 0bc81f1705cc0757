"""Perplexity (and KL divergence) of GGUF files via llama-perplexity, and of HF checkpoints in torch,
by one method, so that every result lands in one comparable table."""
