"""GGUF block quantization: the native kernels, the per-tensor type rules, and the file writer."""
