"""`qconvert inspect calib.safetensors`: a calibration file's manifest and a few decoded samples.

Samples are decoded with the tokenizer the manifest names, when it is still there and still the same
(its hash matches); otherwise their first token ids are shown.
"""

import logging
from pathlib import Path

from qconvert.calib.build import load_tokenizer
from qconvert.calib.store import CalibrationSet, read_calibration, tokenizer_sha256
from qconvert.errors import QConvertError

log = logging.getLogger(__name__)

N_SHOWN = 3
MAX_CHARS = 200
MAX_IDS = 16


def _tokenizer_for(calib: CalibrationSet):
    """The manifest's tokenizer, or why it cannot decode."""
    info = calib.manifest.tokenizer
    if not info.name_or_path or not Path(info.name_or_path).is_dir():
        return None, f"tokenizer folder {info.name_or_path or '(not recorded)'} is not here"
    try:
        tokenizer = load_tokenizer(Path(info.name_or_path))
    except QConvertError as exc:
        return None, str(exc)
    if tokenizer_sha256(tokenizer) != info.sha256:
        return None, f"the tokenizer in {info.name_or_path} has changed since"
    return tokenizer, None


def _sample_lines(calib: CalibrationSet) -> list[str]:
    n = min(N_SHOWN, calib.n_samples)
    tokenizer, why_not = _tokenizer_for(calib)
    lines = [f"samples ({n} of {calib.n_samples}{', decoded' if tokenizer else ''}):"]
    if tokenizer is None:
        lines.append(f"  (token ids only: {why_not})")
    for i in range(n):
        ids = calib.input_ids[i][calib.attention_mask[i].bool()].tolist()
        if tokenizer is None:
            more = ", ..." if len(ids) > MAX_IDS else ""
            lines.append(f"  [{i}] {len(ids)} tokens: [{', '.join(map(str, ids[:MAX_IDS]))}{more}]")
            continue
        text = tokenizer.decode(ids, skip_special_tokens=False)
        shown = text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 3] + "..."
        lines.append(f"  [{i}] {len(ids)} tokens: {shown!r}")
    return lines


def describe_calibration(path: Path) -> list[str]:
    calib = read_calibration(path)
    m, c, o, t = calib.manifest, calib.manifest.counts, calib.manifest.options, calib.manifest.tokenizer
    lines = [
        f"calibration set {path} ({path.stat().st_size:,} bytes)",
        f"  {m.format} version {m.version}, made by qconvert {m.qconvert_version}",
        f"  {calib.n_samples} samples × {calib.seqlen} tokens ({c.tokens:,} real), mode {o.mode.value}, "
        f"seed {o.seed}, min-tokens {o.min_tokens}; {c.samples_requested} asked for",
        f"  tokenizer: {t.class_name}, {t.vocab_size:,} tokens, pad id {t.pad_token_id}, sha256 {t.sha256}",
        f"    from {t.name_or_path or '(not recorded)'}",
        "",
        f"sources ({len(m.sources)}):",
    ]
    for s in m.sources:
        kind = s.format if s.format == s.kind else f"{s.format} ({s.kind})"
        lines.append(f"  {s.path}  {kind}, {s.documents:,} documents, {s.bytes:,} bytes, sha256 {s.sha256}")
    lines += [
        "",
        f"documents: {c.documents:,} in the sources, {c.documents_used:,} used ({c.pool_tokens:,} tokens); dropped: "
        f"{c.empty_dropped} empty, {c.duplicate_documents} duplicate, {c.short_dropped} under min-tokens",
        f"samples: {c.truncated} truncated, {c.padded} padded, {c.duplicate_samples} duplicates passed over",
        "",
    ]
    return lines + _sample_lines(calib)
