"""The Hessian of GPTQ's layer-wise objective, H = 2·XᵀX / n, accumulated from a linear's inputs."""

import torch

PANELS = 8  # XᵀX is symmetric: only the upper triangle is formed, in row panels (~56% of the products)
MIN_PANEL = 128


class Hessian:
    """Running sum of xᵀx over calibration tokens (float32, upper triangle); `matrix()` gives 2·XᵀX/n.

    The scale does not change the solve (damping is relative to the diagonal); it keeps the
    numbers comparable with AutoGPTQ's when debugging.
    """

    def __init__(self, in_features: int, device: torch.device | str = "cpu"):
        self.upper = torch.zeros(in_features, in_features, dtype=torch.float32, device=device)
        self.panel = max(MIN_PANEL, -(-in_features // PANELS))
        self.tokens = 0

    def add(self, x: torch.Tensor) -> None:
        """x: (tokens, in_features), any float dtype. The products are formed in float32 whatever the
        compute dtype: products rounded to bfloat16 made real Hessians indefinite at 1% damping."""
        if x.shape[0] == 0:
            return
        x = x.float()
        for i in range(0, x.shape[1], self.panel):
            self.upper[i : i + self.panel, i:].addmm_(x[:, i : i + self.panel].t(), x[:, i:])
        self.tokens += x.shape[0]

    def matrix(self) -> torch.Tensor:
        full = self.upper.triu() + self.upper.triu(1).t()
        return full * (2.0 / max(self.tokens, 1))
