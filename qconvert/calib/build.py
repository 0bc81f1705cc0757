"""Building a calibration set: read the sources, shuffle their documents with the seed, tokenize them in
that order (dropping empty, duplicate and too-short ones) until there is enough, then cut samples.

`build_calibration` is what every quantization stage calls when given sources; `resolve_calibration`
takes the command-line input (a calibration file or sources); `build_calibration_file` is `qconvert calib`.

The bundled default set (used when no source is given) is defined once, here: English prose,
classical Chinese poems and Python code (`calibration/{en,zh,code}`, plain text) plus the chat
sample (`calibration/chat/sample.jsonl`, formatted with the model's own chat template; left out,
with a logged note, for a tokenizer without one). `calibration/eval/heldout-en.txt` is the held-out
perplexity text and is never part of it. Licences: `calibration/SOURCES.md`.

Tokenizing: text documents are tokenized as the tokenizer does by default (`add_special_tokens=True`:
a BOS for Llama-style tokenizers, nothing for Qwen). Chat records are formatted with the model's own
chat template, exactly as `tokenizer.apply_chat_template(messages, tokenize=False)` does, and that
text is tokenized with `add_special_tokens=False` (the template writes its own), which is exactly
what `apply_chat_template(tokenize=True)` does.

Sampling: everything random comes from one `numpy.random.Generator(PCG64(seed))`, drawn in a fixed
order (first the document order, then, in concat mode, the window order), so the same documents and
options give the same samples.

- concat (AutoAWQ style): documents are joined in the shuffled order with nothing between them
  (each carries what its tokenization adds, e.g. a BOS), cut into consecutive `seqlen` windows
  (the tail shorter than a window is dropped), and windows are picked in a seeded random order.
- samples (GPTQ style): one document per sample, in the shuffled order; a document longer than
  `seqlen` keeps its first `seqlen` tokens; a shorter one is right-padded with the pad id and an
  attention mask of 0.
- dedup: identical documents are dropped before tokenizing, identical samples when they are cut.
"""

import hashlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from qconvert.calib.datasets import read_datasets_source
from qconvert.calib.readers import Document, Messages, Source, read_jsonl_source, read_text_source, source_format
from qconvert.calib.store import CalibrationSet, load_calibration, tokenizer_sha256, write_calibration
from qconvert.calib.types import (
    CalibInput,
    CalibRequest,
    ContentKind,
    Counts,
    Manifest,
    SampleMode,
    SamplingOptions,
    SourceFormat,
    SourceRecord,
    SourceSpec,
    TokenizerInfo,
)
from qconvert.errors import QConvertError, caused_by_interrupt
from qconvert.outputs import check_output_path

log = logging.getLogger(__name__)

BATCH = 64  # documents rendered and tokenized per call; results do not depend on it
DEFAULT_OPTIONS = SamplingOptions()
_EMPTY, _DUPLICATE = -1, -2  # why a document was dropped before tokenizing


# The bundled default set

# The folder sits beside the package in a source checkout (and in the editable install `make` does).
BUNDLED_DIR = Path(__file__).resolve().parent.parent.parent / "calibration"

# (path under calibration/, format)
DEFAULT_SET: tuple[tuple[str, SourceFormat], ...] = (
    ("en", SourceFormat.TEXT),
    ("zh", SourceFormat.TEXT),
    ("code", SourceFormat.TEXT),
    ("chat/sample.jsonl", SourceFormat.CHAT),
)


def default_sources(has_chat_template: bool) -> tuple[SourceSpec, ...]:
    if not BUNDLED_DIR.is_dir():
        raise QConvertError("the bundled calibration data is not here", BUNDLED_DIR, "pass --source, or run from a source checkout")
    specs = []
    for rel, fmt in DEFAULT_SET:
        if fmt is SourceFormat.CHAT and not has_chat_template:
            log.warning("the tokenizer has no chat template: the default set leaves out its chat part (calibration/%s)", rel)
            continue
        specs.append(SourceSpec(BUNDLED_DIR / rel, fmt, label=f"calibration/{rel}"))
    return tuple(specs)


# Reading the sources


def read_source(spec: SourceSpec) -> Source:
    fmt = source_format(spec)
    if fmt is SourceFormat.TEXT:
        return read_text_source(spec)
    if fmt in (SourceFormat.JSONL, SourceFormat.CHAT):
        # AUTO detection of a .jsonl file hands over JSONL; its first record decides text or chat.
        return read_jsonl_source(spec, SourceFormat.AUTO if spec.format is SourceFormat.AUTO else fmt)
    return read_datasets_source(spec, fmt)


def read_sources(specs: Sequence[SourceSpec]) -> list[Source]:
    return [read_source(spec) for spec in specs]


# The tokenizer and the chat template


def load_tokenizer(model_dir: Path):
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise QConvertError("no such model folder", model_dir, "give a Hugging Face model folder")
    import transformers
    from transformers import AutoTokenizer

    transformers.logging.set_verbosity_error()  # documents are tokenized whole on purpose
    if (model_dir / "tokenizer.json").is_file():  # what would abort the process inside tokenizers, refused first
        from qconvert.hf.tokenizer import _load_json, check_rust_safe

        check_rust_safe(_load_json(model_dir / "tokenizer.json"), model_dir / "tokenizer.json")
    try:
        return AutoTokenizer.from_pretrained(model_dir)
    except Exception as exc:  # noqa: BLE001 - damaged tokenizer files fail anywhere inside transformers and tokenizers
        if caused_by_interrupt(exc):
            raise
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise QConvertError(f"transformers cannot load the tokenizer: {why}", model_dir, "check tokenizer.json and tokenizer_config.json, or re-save them with save_pretrained") from exc


def pad_token_id(tokenizer) -> int:
    """The id `samples` mode pads with: the pad token, else EOS, else 0 (the mask says it is padding)."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def require_chat_template(tokenizer, where: object) -> None:
    if not has_chat_template(tokenizer):
        raise QConvertError(
            "chat data needs the model's chat template, and this tokenizer has none",
            where,
            "use a model whose tokenizer_config.json (or chat_template.jinja) has one, or give plain text",
        )


def render_chats(tokenizer, chats: list[Messages], wheres: list[str]) -> list[str]:
    """The chat template's text for each conversation."""
    try:
        return tokenizer.apply_chat_template(chats, tokenize=False)
    except Exception as batch_exc:  # jinja2 errors, or the template's own raise_exception(): find the record
        for chat, where in zip(chats, wheres):
            try:
                tokenizer.apply_chat_template(chat, tokenize=False)
            except Exception as exc:
                raise QConvertError(f"the chat template cannot format this record: {exc}".splitlines()[0], where) from exc
        raise QConvertError(f"the chat template failed: {batch_exc}".splitlines()[0], wheres[0] if wheres else None) from batch_exc


def document_texts(tokenizer, kind: ContentKind, documents: list[Document]) -> list[str]:
    """The text each document is tokenized from: itself, or its conversation in the chat template."""
    if kind is ContentKind.TEXT:
        return [d.value for d in documents]
    return render_chats(tokenizer, [d.value for d in documents], [d.where for d in documents])


def tokenize_texts(tokenizer, kind: ContentKind, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    encoded = tokenizer(texts, add_special_tokens=kind is ContentKind.TEXT, verbose=False)
    return [list(ids) for ids in encoded["input_ids"]]


# Samples

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


# Building


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


def _fill_pool(tokenizer, sources: Sequence[Source], order: np.ndarray, options: SamplingOptions, progress: bool) -> tuple[_Pool, SampleCollector]:
    """Documents in `order` until the mode has enough: `n_samples` distinct samples, or POOL_FACTOR
    times the tokens asked for. Stops at the exact document, so the batch size changes nothing."""
    pool = _Pool(documents=[])
    collector = SampleCollector(options.n_samples, options.seqlen)
    token_target = POOL_FACTOR * options.n_samples * options.seqlen
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


def build_calibration(tokenizer, sources: Sequence[SourceSpec] | None, options: SamplingOptions = DEFAULT_OPTIONS, progress: bool = False) -> CalibrationSet:
    """A calibration set from `sources` (none: the bundled default set), tokenized with `tokenizer`."""
    specs = tuple(sources) if sources else default_sources(has_chat_template(tokenizer))
    return build_from_sources(tokenizer, read_sources(specs), options, progress)


def build_from_sources(tokenizer, read: Sequence[Source], options: SamplingOptions, progress: bool = False) -> CalibrationSet:
    specs = [s.spec for s in read]
    for source in read:
        if source.kind is ContentKind.CHAT:
            require_chat_template(tokenizer, source.spec.path)

    rng = make_rng(options.seed)
    n_documents = sum(len(s.documents) for s in read)
    order = document_order(n_documents, rng)
    pool, collector = _fill_pool(tokenizer, read, order, options, progress)
    if not pool.documents:
        raise QConvertError(
            f"no usable documents: {pool.empty} empty, {pool.duplicates} duplicate, {pool.short} under --min-tokens {options.min_tokens}",
            ", ".join(s.name for s in specs),
        )

    truncated = padded = 0
    if options.mode is SampleMode.CONCAT:
        windows = concat_windows(pool.documents, options.seqlen)
        if len(windows) == 0:
            raise QConvertError(
                f"the sources hold {pool.tokens:,} tokens, less than one --seqlen {options.seqlen} window",
                ", ".join(s.name for s in specs),
                "give more text or a smaller --seqlen",
            )
        ids, duplicate_samples = pick_unique_rows(windows, options.n_samples, rng)
        mask = np.ones_like(ids)
        _warn_short(options, len(ids), f"{pool.tokens:,} tokens ({len(windows) - duplicate_samples} distinct windows)")
    else:
        ids, mask = pad_right(collector.samples, options.seqlen, pad_token_id(tokenizer))
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
