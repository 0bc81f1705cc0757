"""The result of a perplexity run, whichever engine measured it."""

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class PplOptions:
    ctx: int = 512
    chunks: int | None = None  # None: as many whole chunks as the text holds
    threads: int | None = None


@dataclass(frozen=True)
class PplResult:
    ppl: float
    ppl_err: float
    n_tokens: int  # tokens scored: (ctx/2 - 1) per chunk
    ctx: int
    chunks: int
    kld_mean: float | None = None
    same_top_p: float | None = None  # fraction in [0, 1] of scored tokens whose top-1 token agrees with the base

    def to_json_dict(self) -> dict:
        d = asdict(self)
        if self.kld_mean is None:
            del d["kld_mean"], d["same_top_p"]
        return d

    def summary(self) -> str:
        line = f"PPL = {self.ppl:.4f} +/- {self.ppl_err:.5f}  (ctx {self.ctx}, {self.chunks} chunks, {self.n_tokens} tokens scored)"
        if self.kld_mean is not None:
            line += f"  mean KLD = {self.kld_mean:.6f}  same top p = {100 * self.same_top_p:.3f}%"
        return line
