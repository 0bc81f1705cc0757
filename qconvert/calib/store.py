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
from dataclasses import dataclass, fields, is_dataclass
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


def _check_fields(obj, where: Path, prefix: str = "") -> None:
    """Every int and str field of the manifest's dataclasses holds that type (JSON can put anything
    there); a count is not negative."""
    for f in fields(obj):
        value, name = getattr(obj, f.name), f"{prefix}{f.name}"
        if is_dataclass(value):
            _check_fields(value, where, f"{name}.")
        elif f.type in (int, "int") and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise QConvertError(f"calibration manifest field {name} is {_cut(repr(value), 60)}, not a count", where, REBUILD_HINT)
        elif f.type in (str, "str") and not isinstance(value, str):
            raise QConvertError(f"calibration manifest field {name} is {_cut(repr(value), 60)}, not text", where, REBUILD_HINT)


def _cut(text: str, n: int = 300) -> str:
    """Text from a damaged file for an error line, cut short."""
    return text if len(text) <= n else text[: n - 3] + "..."


def _read_manifest(text: str, path: Path) -> Manifest:
    try:
        manifest = Manifest.from_json(text, path)
    except (ValueError, RecursionError) as exc:  # JSON too deep, or an int past Python's digit limit
        raise QConvertError(f"unreadable calibration manifest: {_cut(str(exc))}", path, REBUILD_HINT) from None
    except QConvertError as exc:  # it may quote a damaged field whole
        raise QConvertError(_cut(exc.what), exc.where, exc.hint) from None
    _check_fields(manifest, path)
    for i, source in enumerate(manifest.sources):
        _check_fields(source, path, f"sources[{i}].")
    return manifest


def read_calibration(path: Path) -> CalibrationSet:
    """The set in a calibration file, its format, shapes and values checked; the tokenizer is not."""
    path = Path(path)
    if not path.is_file():
        raise QConvertError("no such calibration file", path, REBUILD_HINT)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            if MANIFEST_KEY not in metadata:
                raise QConvertError("not a qconvert calibration file (no calibration manifest in its metadata)", path, "make one with `qconvert calib MODEL_DIR -o FILE`")
            manifest = _read_manifest(metadata[MANIFEST_KEY], path)
            names = set(f.keys())
            if names != set(TENSOR_NAMES):
                raise QConvertError(f"calibration file holds tensors {sorted(names)}, expected {list(TENSOR_NAMES)}", path, REBUILD_HINT)
            expected = (manifest.counts.samples, manifest.options.seqlen)
            for name in TENSOR_NAMES:  # before reading: the shapes the manifest promises
                shape, dtype = tuple(f.get_slice(name).get_shape()), f.get_slice(name).get_dtype()
                if shape != expected or dtype != "I64":
                    raise QConvertError(f"{name} is {dtype} {shape}, its manifest says I64 {expected}", path, REBUILD_HINT)
            input_ids, attention_mask = (f.get_tensor(name) for name in TENSOR_NAMES)
    except (SafetensorError, OSError) as exc:
        raise QConvertError(f"not a readable safetensors file: {_cut(str(exc))}", path, REBUILD_HINT) from exc
    if input_ids.numel() and int(input_ids.min()) < 0:
        raise QConvertError(f"input_ids holds a negative token id ({int(input_ids.min())})", path, REBUILD_HINT)
    if attention_mask.numel() and not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        raise QConvertError("attention_mask holds values other than 0 and 1", path, REBUILD_HINT)
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
    n_tokens = len(tokenizer)
    if calib.input_ids.numel() and int(calib.input_ids.max()) >= n_tokens:
        raise QConvertError(f"input_ids holds token id {int(calib.input_ids.max())}; the tokenizer has {n_tokens}", path, REBUILD_HINT)
    return calib
