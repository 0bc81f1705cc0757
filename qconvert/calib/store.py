"""A calibration set in memory and on disk.

The file is safetensors with two tensors, both int64 of shape (n_samples, seqlen):
`input_ids` and `attention_mask` (1 for real tokens, 0 for right padding in samples mode), and the
manifest (types.py) as JSON under the metadata key `qconvert.calibration`.

A set is only good for the tokenizer that made it, so the manifest records its hash
(`tokenizer_sha256`) and `load_calibration` refuses a file made with another. The hash is the sha256
of a canonical JSON of what the token ids of a calibration set mean: every token string with its id
(the vocabulary with the added tokens, as `get_vocab()` gives it) and the chat template. It does not
change when the same tokenizer is re-saved or read by another `tokenizers` version, and it does
change when any id means another token or the chat samples would be formatted differently.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from qconvert.calib.types import MANIFEST_KEY, REBUILD_HINT, Manifest
from qconvert.errors import QConvertError
from qconvert.outputs import atomic_output

TENSOR_NAMES = ("input_ids", "attention_mask")


def tokenizer_sha256(tokenizer) -> str:
    vocab = sorted((i, t) for t, i in tokenizer.get_vocab().items())
    payload = {"vocab": vocab, "chat_template": getattr(tokenizer, "chat_template", None)}
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class CalibrationSet:
    input_ids: torch.Tensor  # (n_samples, seqlen) int64
    attention_mask: torch.Tensor  # (n_samples, seqlen) int64: 1 real token, 0 padding
    manifest: Manifest

    @property
    def n_samples(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def seqlen(self) -> int:
        return int(self.input_ids.shape[1])

    def summary(self) -> str:
        c = self.manifest.counts
        return (
            f"{self.n_samples} samples × {self.seqlen} tokens ({c.tokens:,} real tokens, {self.manifest.options.mode.value} mode) "
            f"from {len(self.manifest.sources)} source(s), {c.documents_used:,} of {c.documents:,} documents"
        )


def write_calibration(calib: CalibrationSet, path: Path, force: bool = False) -> Path:
    tensors = {"input_ids": calib.input_ids.contiguous(), "attention_mask": calib.attention_mask.contiguous()}
    data = save(tensors, metadata={MANIFEST_KEY: calib.manifest.to_json()})
    with atomic_output(path, force) as tmp:
        tmp.write_bytes(data)  # not save_file: it makes the file 0600
    return Path(path)


def is_calibration_file(path: Path) -> bool:
    try:
        with safe_open(str(path), framework="pt") as f:
            return MANIFEST_KEY in (f.metadata() or {})
    except (SafetensorError, OSError):
        return False


def read_calibration(path: Path) -> CalibrationSet:
    """The set in a calibration file, its format and shapes checked; the tokenizer is not."""
    path = Path(path)
    if not path.is_file():
        raise QConvertError("no such calibration file", path, REBUILD_HINT)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            if MANIFEST_KEY not in metadata:
                raise QConvertError("not a qconvert calibration file (no calibration manifest in its metadata)", path, "make one with `qconvert calib MODEL_DIR -o FILE`")
            manifest = Manifest.from_json(metadata[MANIFEST_KEY], path)
            names = set(f.keys())
            if names != set(TENSOR_NAMES):
                raise QConvertError(f"calibration file holds tensors {sorted(names)}, expected {list(TENSOR_NAMES)}", path, REBUILD_HINT)
            input_ids, attention_mask = (f.get_tensor(name) for name in TENSOR_NAMES)
    except (SafetensorError, OSError) as exc:
        raise QConvertError(f"not a readable safetensors file: {exc}", path, REBUILD_HINT) from exc
    expected = (manifest.counts.samples, manifest.options.seqlen)
    for name, t in zip(TENSOR_NAMES, (input_ids, attention_mask)):
        if tuple(t.shape) != expected or t.dtype != torch.int64:
            raise QConvertError(f"{name} is {t.dtype} {tuple(t.shape)}, its manifest says int64 {expected}", path, REBUILD_HINT)
    return CalibrationSet(input_ids, attention_mask, manifest)


def load_calibration(path: Path, tokenizer) -> CalibrationSet:
    """The set in a calibration file, refused unless it was made with this tokenizer."""
    calib = read_calibration(path)
    made_with = calib.manifest.tokenizer
    this = tokenizer_sha256(tokenizer)
    if made_with.sha256 != this:
        raise QConvertError(
            f"calibration file was made with a different tokenizer ({made_with.class_name} from {made_with.name_or_path}, "
            f"sha256 {made_with.sha256[:12]}…; this model's is {this[:12]}…)",
            path,
            "rebuild it for this model with `qconvert calib MODEL_DIR -o FILE`, or give --source instead",
        )
    return calib
