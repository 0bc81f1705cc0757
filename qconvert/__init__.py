"""qconvert: quantize and convert LLM checkpoints (HF → GGUF, GPTQ, AWQ) and measure them."""

__version__ = "0.1.0"
