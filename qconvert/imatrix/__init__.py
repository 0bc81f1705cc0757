"""Importance matrices (imatrix): llama.cpp's per-column activation statistics that guide quantization."""
