"""GPTQ: the algorithm as pure functions on tensors (grid, Hessian, solve, packing), the checkpoint
format, and `quantize_gptq`, which runs it layer by layer through the shared driver."""
