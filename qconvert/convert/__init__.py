"""Hugging Face checkpoint → GGUF conversion."""
