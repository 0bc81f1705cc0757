"""AWQ options as a typed dataclass, checked once, before any work starts; and the quantization grid
each GGUF type uses, for searches aimed at a GGUF file."""

from dataclasses import dataclass

from gguf import GGMLQuantizationType as T

from qconvert.errors import QConvertError
from qconvert.quant.file_types import FALLBACK, FILE_TYPES, FileType

PACKED_BITS = 4  # the AWQ GEMM format stores 4-bit weights only
EXPORT_BITS = range(2, 9)  # the fp16 export only steers the search with them
PACKED_WIDTH = 8  # GEMM packs eight output columns to an int32 word


@dataclass(frozen=True)
class AWQConfig:
    bits: int = 4
    group_size: int = 128  # -1: one group per output channel
    zero_point: bool = True  # asymmetric grid (AutoAWQ's default); off: symmetric absmax grid
    clip: bool = True  # search a clipping range per group (not for q/k)
    duo_scaling: bool = True  # scales from activation and weight magnitudes, not activations alone
    export_compatible: bool = False  # write scaled fp16 weights instead of packed 4-bit ones
    n_grid: int = 20  # ratios tried by the scale search; clip shrinks by 1/n_grid steps
    max_shrink: float = 0.5  # clipping tries ranges down to (1 - max_shrink) of the group's absmax
    clip_tokens: int = 512  # calibration tokens the clip search subsamples
    # Calibration tokens the scale search's loss is measured on (whole batches, spread evenly over the
    # set; 0: all, as AutoAWQ). The activation statistics always use every token.
    search_tokens: int = 16384
    # A GGUF file type the fp16 export is meant for: the search then fake-quantizes each linear as
    # llama.cpp will in that file (bits, group_size and zero_point only steer the weight statistics).
    gguf_type: FileType | None = None

    def __post_init__(self) -> None:
        if self.gguf_type is not None and not self.export_compatible:
            raise QConvertError("--gguf-type steers the fp16 export", "--gguf-type", "add --export-compatible")
        if self.export_compatible:
            if self.bits not in EXPORT_BITS:
                raise QConvertError(f"unsupported bits {self.bits}", "--bits", "the scale search takes 2 to 8 bits")
        elif self.bits != PACKED_BITS:
            raise QConvertError(f"AWQ GEMM checkpoints hold 4-bit weights, not {self.bits}-bit", "--bits", "use --bits 4, or --export-compatible to steer the search for a GGUF")
        if self.search_tokens < 0:
            raise QConvertError(f"search tokens {self.search_tokens} is negative", "--search-tokens", "give 0 (all) or a token count")
        if self.group_size != -1 and self.group_size < 1:
            raise QConvertError(f"unsupported group size {self.group_size}", "--group-size", "give a positive group size (e.g. 32, 64, 128), or -1 for one per output channel")

    @property
    def maxq(self) -> int:
        return (1 << self.bits) - 1


# The grid of one GGUF block type: (bits, group size, asymmetric). k-quants have 16- or
# 32-element sub-blocks with a scale (and for 2, 4, 5 bits a minimum) each.
GGUF_GRIDS = {
    T.Q2_K: (2, 16, True),
    T.Q3_K: (3, 16, False),
    T.Q4_0: (4, 32, False),
    T.Q4_1: (4, 32, True),
    T.Q4_K: (4, 32, True),
    T.Q5_0: (5, 32, False),
    T.Q5_1: (5, 32, True),
    T.Q5_K: (5, 32, True),
    T.Q6_K: (6, 16, False),
    T.Q8_0: (8, 32, False),
}
SUPER_BLOCK = 256  # k-quant rows must be whole super-blocks, else llama.cpp falls back (FALLBACK)


def gguf_grid(file_type: FileType, in_widths: list[int]) -> tuple[int, int, bool]:
    """(bits, group size, zero point) of the grid most of a `file_type` GGUF's weights get: the file
    type's base block type, or its fallback when the model's input widths are not whole k-quant
    super-blocks (hidden 576, say)."""
    info = FILE_TYPES[file_type]
    if not info.quantized:
        raise QConvertError(f"{file_type.value} is not a quantized GGUF type", "--gguf-type", "name the type you will quantize to, e.g. q4_k_m")
    block = info.default
    if block in FALLBACK and any(w % SUPER_BLOCK for w in in_widths):
        block = FALLBACK[block]
    return GGUF_GRIDS[block]
