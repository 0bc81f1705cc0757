"""AWQ: activation-aware weight scaling and clipping, packed into AWQ GEMM checkpoints or folded into fp16 weights."""
