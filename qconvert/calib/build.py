"""Building a calibration set: read the sources, shuffle their documents with the seed, tokenize them in
that order (dropping empty, duplicate and too-short ones) until there is enough, then cut samples.

`build_calibration` is what every quantization stage calls when given sources; `resolve_calibration`
takes the command-line input (a calibration file or sources); `build_calibration_file` is `qconvert calib`.
"""

import hashlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from qconvert.calib import sampling
from qconvert.calib.chat import has_chat_template, require_chat_template
from qconvert.calib.default_set import default_sources
from qconvert.calib.manifest import Counts, Manifest, SourceRecord, TokenizerInfo
from qconvert.calib.options import CalibInput, CalibRequest, ContentKind, SampleMode, SamplingOptions, SourceSpec
from qconvert.calib.sources import Source, read_source
from qconvert.calib.store import CalibrationSet, load_calibration, write_calibration
from qconvert.calib.tokenize import document_texts, load_tokenizer, pad_token_id, tokenize_texts, tokenizer_sha256
from qconvert.errors import QConvertError
from qconvert.outputs import check_output_path

log = logging.getLogger(__name__)

BATCH = 64  # documents rendered and tokenized per call; results do not depend on it
DEFAULT_OPTIONS = SamplingOptions()
_EMPTY, _DUPLICATE = -1, -2  # why a document was dropped before tokenizing


@dataclass
class _Pool:
    """The tokenized documents taken so far, in the shuffled order, and what was dropped on the way."""

    documents: list[list[int]]
    tokens: int = 0
    empty: int = 0
    duplicates: int = 0
    short: int = 0


def _ordered_batches(sources: Sequence[Source], order: np.ndarray) -> Iterator[tuple[ContentKind, list]]:
    """The documents in `order` (global indices), in runs of one source kind, at most BATCH long."""
    starts = np.cumsum([0] + [len(s.documents) for s in sources])
    run: list = []
    run_kind = None
    for g in order:
        s = int(np.searchsorted(starts, g, side="right")) - 1
        kind = sources[s].kind
        if run and (kind is not run_kind or len(run) == BATCH):
            yield run_kind, run
            run = []
        run_kind = kind
        run.append(sources[s].documents[int(g - starts[s])])
    if run:
        yield run_kind, run


def _fill_pool(tokenizer, sources: Sequence[Source], order: np.ndarray, options: SamplingOptions, progress: bool) -> tuple[_Pool, sampling.SampleCollector]:
    """Documents in `order` until the mode has enough: `n_samples` distinct samples, or POOL_FACTOR
    times the tokens asked for. Stops at the exact document, so the batch size changes nothing."""
    pool = _Pool(documents=[])
    collector = sampling.SampleCollector(options.n_samples, options.seqlen)
    token_target = sampling.POOL_FACTOR * options.n_samples * options.seqlen
    min_tokens = max(options.min_tokens, 1)
    seen: set[bytes] = set()
    with tqdm(total=len(order), desc="calibration", unit="doc", disable=not progress) as bar:
        for kind, docs in _ordered_batches(sources, order):
            fresh: list[str] = []  # texts not seen before, to tokenize
            slots: list[int] = []  # per document: its index in `fresh`, or _EMPTY / _DUPLICATE
            for text in document_texts(tokenizer, kind, docs):
                key = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
                if not text.strip():
                    slots.append(_EMPTY)
                elif key in seen:
                    slots.append(_DUPLICATE)
                else:
                    seen.add(key)
                    slots.append(len(fresh))
                    fresh.append(text)
            token_ids = tokenize_texts(tokenizer, kind, fresh)
            for slot in slots:
                bar.update(1)
                if slot == _EMPTY:
                    pool.empty += 1
                elif slot == _DUPLICATE:
                    pool.duplicates += 1
                elif len(token_ids[slot]) < min_tokens:
                    pool.short += 1
                else:
                    ids = token_ids[slot]
                    pool.documents.append(ids)
                    pool.tokens += len(ids)
                    if options.mode is SampleMode.SAMPLES:
                        collector.add(ids)
                        if collector.full:
                            return pool, collector
                    elif pool.tokens >= token_target:
                        return pool, collector
    return pool, collector


def _tokenizer_info(tokenizer) -> TokenizerInfo:
    where = str(tokenizer.name_or_path or "")
    if where and Path(where).is_dir():
        where = str(Path(where).resolve())
    return TokenizerInfo(tokenizer_sha256(tokenizer), type(tokenizer).__name__, len(tokenizer.get_vocab()), pad_token_id(tokenizer), where)


def _source_records(sources: Sequence[Source]) -> tuple[SourceRecord, ...]:
    return tuple(SourceRecord(s.spec.name, s.format.value, s.kind.value, s.sha256, s.n_bytes, len(s.documents)) for s in sources)


def _warn_short(options: SamplingOptions, made: int, available: str) -> None:
    if made < options.n_samples:
        log.warning(
            "asked for %d samples of %d tokens, but the sources hold %s: made %d samples",
            options.n_samples, options.seqlen, available, made,
        )


def read_sources(specs: Sequence[SourceSpec]) -> list[Source]:
    return [read_source(spec) for spec in specs]


def build_calibration(tokenizer, sources: Sequence[SourceSpec] | None, options: SamplingOptions = DEFAULT_OPTIONS, progress: bool = False) -> CalibrationSet:
    """A calibration set from `sources` (none: the bundled default set), tokenized with `tokenizer`."""
    specs = tuple(sources) if sources else default_sources(has_chat_template(tokenizer))
    return build_from_sources(tokenizer, read_sources(specs), options, progress)


def build_from_sources(tokenizer, read: Sequence[Source], options: SamplingOptions, progress: bool = False) -> CalibrationSet:
    specs = [s.spec for s in read]
    for source in read:
        if source.kind is ContentKind.CHAT:
            require_chat_template(tokenizer, source.spec.path)

    rng = sampling.make_rng(options.seed)
    n_documents = sum(len(s.documents) for s in read)
    order = sampling.document_order(n_documents, rng)
    pool, collector = _fill_pool(tokenizer, read, order, options, progress)
    if not pool.documents:
        raise QConvertError(
            f"no usable documents: {pool.empty} empty, {pool.duplicates} duplicate, {pool.short} under --min-tokens {options.min_tokens}",
            ", ".join(s.name for s in specs),
        )

    truncated = padded = 0
    if options.mode is SampleMode.CONCAT:
        windows = sampling.concat_windows(pool.documents, options.seqlen)
        if len(windows) == 0:
            raise QConvertError(
                f"the sources hold {pool.tokens:,} tokens, less than one --seqlen {options.seqlen} window",
                ", ".join(s.name for s in specs),
                "give more text or a smaller --seqlen",
            )
        ids, duplicate_samples = sampling.pick_unique_rows(windows, options.n_samples, rng)
        mask = np.ones_like(ids)
        _warn_short(options, len(ids), f"{pool.tokens:,} tokens ({len(windows) - duplicate_samples} distinct windows)")
    else:
        ids, mask = sampling.pad_right(collector.samples, options.seqlen, pad_token_id(tokenizer))
        duplicate_samples, truncated = collector.duplicates, collector.truncated
        padded = int((mask[:, -1] == 0).sum())
        at_least = f" of at least {options.min_tokens} tokens" if options.min_tokens > 1 else ""
        _warn_short(options, len(ids), f"only {len(ids)} distinct documents{at_least}")

    counts = Counts(
        documents=n_documents,
        documents_used=len(pool.documents),
        empty_dropped=pool.empty,
        duplicate_documents=pool.duplicates,
        short_dropped=pool.short,
        pool_tokens=pool.tokens,
        truncated=truncated,
        padded=padded,
        duplicate_samples=duplicate_samples,
        samples_requested=options.n_samples,
        samples=len(ids),
        tokens=int(mask.sum()),
    )
    manifest = Manifest(_tokenizer_info(tokenizer), options, _source_records(read), counts)
    return CalibrationSet(torch.from_numpy(ids), torch.from_numpy(mask), manifest)


def resolve_calibration(tokenizer, calib_input: CalibInput, progress: bool = False) -> CalibrationSet:
    """What a quantization stage calibrates on: the given file (made with this tokenizer), or a set built now."""
    if calib_input.file is not None:
        return load_calibration(calib_input.file, tokenizer)
    return build_calibration(tokenizer, calib_input.request.sources, calib_input.request.options, progress)


def build_calibration_file(model_dir: Path, out: Path, request: CalibRequest, force: bool = False, progress: bool = False) -> CalibrationSet:
    """`qconvert calib`: build with the model's tokenizer and write `out` atomically."""
    check_output_path(Path(out), force)
    if request.sources:  # bad input is found before the (slower) tokenizer load
        read = read_sources(request.sources)
        tokenizer = load_tokenizer(model_dir)
    else:
        tokenizer = load_tokenizer(model_dir)
        read = read_sources(default_sources(has_chat_template(tokenizer)))
    calib = build_from_sources(tokenizer, read, request.options, progress)
    write_calibration(calib, Path(out), force)
    log.info("wrote %s: %s", out, calib.summary())
    return calib
