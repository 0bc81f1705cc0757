"""GPTQ options as a typed dataclass, checked once, before any work starts."""

from dataclasses import dataclass

from qconvert.errors import QConvertError

BITS = (2, 3, 4, 8)
GROUP_SIZES = (-1, 32, 64, 128)
BLOCK_SIZE = 128  # columns per lazy-batch block of the solve; every group size divides it


@dataclass(frozen=True)
class GPTQConfig:
    bits: int = 4
    group_size: int = 128  # -1: one group per output channel (the whole input width)
    sym: bool = True
    desc_act: bool = False  # act-order: columns in order of decreasing Hessian diagonal
    static_groups: bool = False  # group grids fixed up front from the unpermuted weights
    damp_percent: float = 0.01  # of the mean Hessian diagonal, added to the diagonal
    true_sequential: bool = True

    def __post_init__(self) -> None:
        if self.bits not in BITS:
            raise QConvertError(f"unsupported bits {self.bits}", "--bits", f"choose one of {', '.join(map(str, BITS))}")
        if self.group_size not in GROUP_SIZES:
            raise QConvertError(
                f"unsupported group size {self.group_size}", "--group-size", f"choose one of {', '.join(map(str, GROUP_SIZES))}"
            )
        if not 0 < self.damp_percent < 1:
            raise QConvertError(f"damping {self.damp_percent} is not between 0 and 1", "--damp", "the usual value is 0.01")

    @property
    def maxq(self) -> int:
        return (1 << self.bits) - 1

    def group_width(self, in_features: int) -> int:
        return in_features if self.group_size == -1 else self.group_size

    def n_groups(self, in_features: int) -> int:
        return -(-in_features // self.group_width(in_features))
