"""Reading Hugging Face checkpoints: config, safetensors weights, tokenizer files."""
