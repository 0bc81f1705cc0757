"""The Hessian of GPTQ's layer-wise objective, H = 2·XᵀX / n, accumulated from a linear's inputs."""

import torch


class Hessian:
    """Running sum of xᵀx over calibration tokens (float32); `matrix()` scales it to 2·XᵀX/n.

    The scale does not change the solve (damping is relative to the diagonal); it keeps the
    numbers comparable with AutoGPTQ's when debugging.
    """

    def __init__(self, in_features: int, device: torch.device | str = "cpu"):
        self.sum = torch.zeros(in_features, in_features, dtype=torch.float32, device=device)
        self.tokens = 0

    def add(self, x: torch.Tensor) -> None:
        """x: (tokens, in_features), any float dtype. The products are formed in float32 whatever the
        compute dtype: products rounded to bfloat16 made real Hessians indefinite at 1% damping."""
        if x.shape[0] == 0:
            return
        x = x.float()
        self.sum.addmm_(x.t(), x)
        self.tokens += x.shape[0]

    def matrix(self) -> torch.Tensor:
        return self.sum * (2.0 / max(self.tokens, 1))
