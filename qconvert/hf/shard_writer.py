"""Writing a Hugging Face checkpoint's tensors as safetensors shards, as they are produced.

Tensors are buffered until a shard is full, then written; at the end the shards are named
model-0000k-of-0000n.safetensors with a model.safetensors.index.json (or model.safetensors alone
when one shard holds everything), as transformers' save_pretrained does.
"""

import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from qconvert.errors import QConvertError
from qconvert.hf.safetensors_reader import INDEX_FILE, SINGLE_FILE

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str, where: str = "--max-shard-size") -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*", text.upper())
    if not m or m.group(2) not in _UNITS or float(m.group(1)) <= 0:
        raise QConvertError(f"cannot read size {text!r}", where, "write it like 4GB, 500MB or 2GiB")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


class ShardWriter:
    def __init__(self, folder: Path, max_shard_bytes: int, metadata: dict[str, str] | None = None):
        self.folder, self.max_shard_bytes = folder, max_shard_bytes
        self.metadata = {"format": "pt", **(metadata or {})}
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_bytes = 0
        self.shards: list[tuple[Path, list[str]]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        if self.pending and self.pending_bytes + nbytes > self.max_shard_bytes:
            self._flush()
        self.pending[name] = tensor.detach().cpu().contiguous()
        self.pending_bytes += nbytes
        self.total_bytes += nbytes

    def _flush(self) -> None:
        path = self.folder / f".shard-{len(self.shards):05d}.safetensors"
        save_file(self.pending, str(path), metadata=self.metadata)
        path.chmod(0o644)  # save_file makes it 0600
        self.shards.append((path, sorted(self.pending)))
        self.pending, self.pending_bytes = {}, 0

    def close(self) -> None:
        if self.pending or not self.shards:
            self._flush()
        if len(self.shards) == 1:
            self.shards[0][0].rename(self.folder / SINGLE_FILE)
            return
        weight_map = {}
        n = len(self.shards)
        for k, (path, names) in enumerate(self.shards, start=1):
            final = f"model-{k:05d}-of-{n:05d}.safetensors"
            path.rename(self.folder / final)
            weight_map.update(dict.fromkeys(names, final))
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
        (self.folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
