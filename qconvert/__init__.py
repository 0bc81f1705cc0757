"""qconvert: quantize and convert LLM checkpoints (HF → GGUF, GPTQ, AWQ) and measure them."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `qconvert.load` without importing torch and transformers when the package is imported
    if name == "load":
        from qconvert.loading import load

        return load
    raise AttributeError(f"module 'qconvert' has no attribute {name!r}")
