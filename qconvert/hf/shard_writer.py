"""Writing a Hugging Face checkpoint's tensors as safetensors shards, as they are produced, in
bounded memory.

Tensors are buffered up to PART_BYTES and then spilled to a part file in the output folder; at the
end the parts are merged, by streaming copies of their data, into shards of at most
`max_shard_bytes` named model-0000k-of-0000n.safetensors with a model.safetensors.index.json (or
model.safetensors alone when one shard holds everything), as transformers' save_pretrained does.
"""

import errno
import json
import re
import struct
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from qconvert.errors import QConvertError
from qconvert.hf.safetensors_reader import INDEX_FILE, SINGLE_FILE, TensorEntry, read_header

PART_BYTES = 64 * 2**20
COPY_CHUNK = 16 * 2**20
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def _errno_of(message: str) -> int:
    """The errno in a safetensors I/O error's text ("... (os error 28)"), else EIO."""
    m = re.search(r"os error (\d+)", message)
    return int(m.group(1)) if m else errno.EIO


def parse_size(text: str, where: str = "--max-shard-size") -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*", text.upper())
    if not m or m.group(2) not in _UNITS or float(m.group(1)) <= 0:
        raise QConvertError(f"cannot read size {text!r}", where, "write it like 4GB, 500MB or 2GiB")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


class ShardWriter:
    def __init__(self, folder: Path, max_shard_bytes: int):
        self.folder, self.max_shard_bytes = folder, max_shard_bytes
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_bytes = 0
        self.parts: list[Path] = []

    def add(self, name: str, tensor: torch.Tensor) -> None:
        self.pending[name] = tensor.detach().cpu().contiguous()
        self.pending_bytes += tensor.numel() * tensor.element_size()
        if self.pending_bytes >= PART_BYTES:
            self._spill()

    def _spill(self) -> None:
        path = self.folder / f".part-{len(self.parts):05d}.safetensors"
        try:
            save_file(self.pending, str(path))
        except SafetensorError as exc:  # the Rust writer's I/O errors (a full disk): as the OSError they are
            raise OSError(_errno_of(str(exc)), f"{exc}", str(path)) from exc
        self.parts.append(path)
        self.pending, self.pending_bytes = {}, 0

    def close(self) -> None:
        if self.pending or not self.parts:
            self._spill()
        entries = [e for part in self.parts for e in read_header(part).values()]
        shards: list[list[TensorEntry]] = [[]]
        size = 0
        for e in entries:  # in the order they were added
            if shards[-1] and size + e.nbytes > self.max_shard_bytes:
                shards.append([])
                size = 0
            shards[-1].append(e)
            size += e.nbytes
        names = [SINGLE_FILE] if len(shards) == 1 else [f"model-{k:05d}-of-{len(shards):05d}.safetensors" for k in range(1, len(shards) + 1)]
        for name, shard in zip(names, shards):
            _write_shard(self.folder / name, shard)
        for part in self.parts:
            part.unlink()
        if len(shards) > 1:
            weight_map = {e.name: name for name, shard in zip(names, shards) for e in shard}
            index = {"metadata": {"total_size": sum(e.nbytes for e in entries)}, "weight_map": dict(sorted(weight_map.items()))}
            (self.folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")


def _write_shard(path: Path, entries: list[TensorEntry]) -> None:
    """A safetensors file holding `entries`, their bytes copied from the part files in chunks."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for e in entries:
        header[e.name] = {"dtype": e.dtype, "shape": list(e.shape), "data_offsets": [offset, offset + e.nbytes]}
        offset += e.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned, as safetensors writes it
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(raw)) + raw)
        for e in entries:
            with open(e.file, "rb") as src:
                src.seek(e.offset)
                left = e.nbytes
                while left:
                    chunk = src.read(min(left, COPY_CHUNK))
                    out.write(chunk)
                    left -= len(chunk)
