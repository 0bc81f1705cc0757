"""From tokenized documents to fixed-length samples: the seeded order, windows, samples, dedup.

Everything random comes from one `numpy.random.Generator(PCG64(seed))`, drawn in a fixed order
(first the document order, then, in concat mode, the window order), so the same documents and
options give the same samples.

- concat (AutoAWQ style): documents are joined in the shuffled order with nothing between them
  (each carries what its tokenization adds, e.g. a BOS), cut into consecutive `seqlen` windows
  (the tail shorter than a window is dropped), and windows are picked in a seeded random order.
- samples (GPTQ style): one document per sample, in the shuffled order; a document longer than
  `seqlen` keeps its first `seqlen` tokens; a shorter one is right-padded with the pad id and an
  attention mask of 0.
- dedup: identical documents are dropped before tokenizing (build.py), identical samples here.
"""

from dataclasses import dataclass, field

import numpy as np

# In concat mode, documents are tokenized (in the shuffled order) until the pool holds this many
# times the tokens asked for; windows are then picked from the whole pool. Small sets are used whole.
POOL_FACTOR = 4


def make_rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def document_order(n_documents: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(n_documents)


def concat_windows(documents: list[list[int]], seqlen: int) -> np.ndarray:
    """(n_windows, seqlen) int64: the documents joined and cut; the short tail is dropped."""
    flat = np.fromiter((t for ids in documents for t in ids), dtype=np.int64)
    n = len(flat) // seqlen
    return flat[: n * seqlen].reshape(n, seqlen)


def pick_unique_rows(rows: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Up to `n` distinct rows of `rows` (n_rows, seqlen) in a seeded random order, and the number of
    duplicate rows passed over on the way."""
    seen: set[bytes] = set()
    picked: list[int] = []
    duplicates = 0
    for i in rng.permutation(len(rows)):
        key = rows[i].tobytes()
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        picked.append(int(i))
        if len(picked) == n:
            break
    return rows[picked].reshape(len(picked), rows.shape[1]), duplicates


@dataclass
class SampleCollector:
    """samples mode: takes documents in order until `n` distinct (truncated) samples are in."""

    n: int
    seqlen: int
    samples: list[list[int]] = field(default_factory=list)
    truncated: int = 0
    duplicates: int = 0
    _seen: set[tuple[int, ...]] = field(default_factory=set)

    @property
    def full(self) -> bool:
        return len(self.samples) >= self.n

    def add(self, ids: list[int]) -> None:
        sample = tuple(ids[: self.seqlen])
        if sample in self._seen:
            self.duplicates += 1
            return
        self._seen.add(sample)
        self.truncated += len(ids) > self.seqlen
        self.samples.append(list(sample))


def pad_right(samples: list[list[int]], seqlen: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, seqlen) int64 input ids right-padded with `pad_id`, and the (n, seqlen) int64 attention mask."""
    ids = np.full((len(samples), seqlen), pad_id, dtype=np.int64)
    mask = np.zeros((len(samples), seqlen), dtype=np.int64)
    for row, sample in enumerate(samples):
        ids[row, : len(sample)] = sample
        mask[row, : len(sample)] = 1
    return ids, mask
