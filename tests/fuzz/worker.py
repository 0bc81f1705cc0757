"""Run one input kind's fuzz cases in-process, in a process of its own with its address space capped.

    python -m tests.fuzz.worker KIND --cases N --seed S --work DIR --out RESULT.json [--keep K] [--hf-model DIR]

Each case is a seeded mutation of the kind's seed file (tests/fuzz/seeds.py), handed to the readers
(and, where they parse it, the commands' library functions) that take that input. It must end in a
QConvertError with a one-line message (a clear error) or in success with an output that reads back
(valid output); anything else — another exception, a case running past CASE_SECONDS, a MemoryError
under the address-space cap — is counted as "other" with its traceback. A signal kills the worker:
the last case started is in WORK/current-case.txt. The result JSON holds the counts, the "other"
cases, the slowest case and the peak RSS growth; K cases of each outcome are kept under
WORK/kept/ for the CLI sample (test_cli_sample.py).
"""

import argparse
import json
import os
import random
import resource
import shutil
import signal
import struct
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from qconvert.errors import QConvertError
from tests.fuzz import seeds
from tests.fuzz.mutate import Case, byte_mutations, json_mutations, text_fields, truncations

CASE_SECONDS = 20  # far above any case (milliseconds): a case past it is a hang
MAX_ERROR_CHARS = 2000  # an error line quoting a damaged field must cut it short
MEMORY_HEADROOM = 1 << 30  # address space allowed above the worker's own after warm-up; inputs are < 2 MB


class Hang(Exception):
    pass


@dataclass
class Kind:
    """One input kind: the file mutated (in `folder`, or alone), its cases, and what runs on it."""

    target_file: Path  # where each case's bytes are written
    cases: Callable[[int, random.Random], Iterator[Case]]
    run: Callable[[Path], None]  # raises QConvertError or returns after checking its output
    suffix: str
    seed: bytes  # the valid input the cases mutate


def _mix(seed_bytes: bytes, fields, json_text: bytes | None = None, trunc_share: float = 0.2):
    def cases(n: int, rng: random.Random) -> Iterator[Case]:
        cuts = truncations(seed_bytes, fields, max(1, int(n * trunc_share)))
        yield from cuts
        rest = n - len(cuts)
        if json_text is not None:
            yield from json_mutations(json_text, rest // 2, rng)
            rest -= rest // 2
        yield from byte_mutations(seed_bytes, fields, rest, rng)

    return cases


def _safetensors_header_cases(seed_bytes: bytes, n: int, rng: random.Random) -> Iterator[Case]:
    """JSON mutations of a safetensors header, packed back with its new length."""
    (length,) = struct.unpack_from("<Q", seed_bytes, 0)
    header, body = seed_bytes[8 : 8 + length], seed_bytes[8 + length :]
    for case in json_mutations(header, n, rng):
        yield Case("header " + case.name, len(case.data).to_bytes(8, "little") + case.data + body)


def _check_gguf(path: Path, names: set[str]) -> None:
    """The output reads back, and holds only tensors it should (`names`). A checkpoint that lacks a
    tensor converts without it, as llama.cpp's convert_hf_to_gguf.py converts it."""
    from qconvert.gguf_read import read_gguf_header

    header = read_gguf_header(path)
    got = {t.name for t in header.tensors}
    assert got and got <= names, f"output has tensors {sorted(got - names)} the seed's has not"


def build_kind(name: str, work: Path, hf_model: Path | None) -> Kind:
    from qconvert.gguf_read import read_gguf_header
    from qconvert.quant.file_types import FileType
    from qconvert.quant.gguf_quantize import QuantizeOptions, quantize_gguf

    seed_dir = work / "seed"
    seed_dir.mkdir(parents=True, exist_ok=True)
    out = work / "out.gguf"
    model_gguf = seeds.write_gguf_model(seed_dir / "model.gguf")

    def quantize(src: Path, imatrix: Path | None = None) -> None:
        out.unlink(missing_ok=True)
        quantize_gguf(src, out, QuantizeOptions(FileType.Q4_K_M, progress=False, threads=1, imatrix=imatrix))
        # the input's tensors, whatever their (mutated) names: quantizing keeps names
        _check_gguf(out, {t.name for t in read_gguf_header(src).tensors})

    if name == "gguf":
        from qconvert.inspect_model import describe_gguf

        data = model_gguf.read_bytes()

        def run(p: Path) -> None:
            assert describe_gguf(p)
            quantize(p)

        return Kind(work / "case.gguf", _mix(data, seeds.gguf_fields(data)), run, ".gguf", data)

    if name in ("imatrix-gguf", "imatrix-dat"):
        from qconvert.imatrix.file import read_imatrix

        seed = seeds.write_imatrix_gguf(seed_dir / "imatrix.gguf") if name == "imatrix-gguf" else seeds.write_imatrix_dat(seed_dir / "imatrix.dat")
        data = seed.read_bytes()
        fields = seeds.gguf_fields(data) if name == "imatrix-gguf" else seeds.dat_fields(data)

        def run(p: Path) -> None:
            matrix = read_imatrix(p)
            for entry in matrix.entries:
                matrix.importance(entry)
            quantize(model_gguf, imatrix=p)

        return Kind(work / f"case{seed.suffix}", _mix(data, fields), run, seed.suffix, data)

    if name == "calibration":
        from qconvert.calib.build import load_tokenizer
        from qconvert.calib.store import load_calibration
        from qconvert.inspect_calib import describe_calibration

        tokenizer = load_tokenizer(seeds.FIXTURE)
        seed = seeds.write_calibration_seed(seed_dir / "calib.safetensors", tokenizer)
        data = seed.read_bytes()
        fields = seeds.safetensors_fields(data)
        (length,) = struct.unpack_from("<Q", data, 0)
        manifest = json.loads(data[8 : 8 + length])["__metadata__"]["qconvert.calibration"].encode()

        def cases(n: int, rng: random.Random) -> Iterator[Case]:
            yield from _mix(data, fields)(n - n // 4 - n // 4, rng)
            yield from _safetensors_header_cases(data, n // 4, rng)
            yield from _manifest_cases(data, manifest, n // 4, rng)

        def run(p: Path) -> None:
            calib = load_calibration(p, tokenizer)
            assert calib.input_ids.shape == calib.attention_mask.shape
            assert describe_calibration(p)

        return Kind(work / "case.safetensors", cases, run, ".safetensors", data)

    # The Hugging Face folder kinds: one file of a copy of the model is replaced by each case.
    from qconvert.convert.hf_to_gguf import ConvertOptions, convert_hf_to_gguf
    from qconvert.hf.config import ModelConfig
    from qconvert.hf.safetensors_reader import SafetensorsCheckpoint
    from qconvert.inspect_model import describe_hf

    folder = work / "model"
    if name == "safetensors-index":
        seeds.make_sharded(hf_model, folder)
    else:
        shutil.copytree(hf_model, folder)
    hf_tensors = {"token_embd.weight", "output_norm.weight", "output.weight"} | {
        f"blk.0.{n}.weight" for n in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")
    }

    def convert() -> None:
        out.unlink(missing_ok=True)
        convert_hf_to_gguf(folder, out, ConvertOptions(file_type=FileType.Q8_0, progress=False, threads=1))
        _check_gguf(out, hf_tensors)

    if name in ("safetensors", "safetensors-index"):
        fname = "model.safetensors" if name == "safetensors" else "model-00001-of-00002.safetensors"
        data = (folder / fname).read_bytes()
        index = (folder / "model.safetensors.index.json").read_bytes() if name == "safetensors-index" else None

        def cases(n: int, rng: random.Random) -> Iterator[Case]:
            if index is not None:  # half the cases damage the index, half the first shard
                for case in _mix(index, text_fields(index), index)(n // 2, rng):
                    yield Case("index: " + case.name, b"INDEX" + case.data)
                n -= n // 2
            yield from _mix(data, seeds.safetensors_fields(data))(n - n // 3, rng)
            yield from _safetensors_header_cases(data, n // 3, rng)

        def run(p: Path) -> None:
            raw = p.read_bytes()
            target = folder / ("model.safetensors.index.json" if raw.startswith(b"INDEX") else fname)
            original = target.read_bytes()
            target.write_bytes(raw[5:] if raw.startswith(b"INDEX") else raw)
            try:
                ckpt = SafetensorsCheckpoint.open(folder)
                for entry in ckpt.entries:
                    ckpt.load(entry)
                assert describe_hf(folder)
                convert()
            finally:
                target.write_bytes(original)

        return Kind(work / "case.bin", cases, run, ".bin", data)

    if name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        from qconvert.calib.build import load_tokenizer
        from qconvert.hf.tokenizer import load_gguf_vocab

        target = folder / name
        data = target.read_bytes()

        def run(p: Path) -> None:
            original = target.read_bytes()
            shutil.copyfile(p, target)
            try:
                if name == "config.json":
                    config = ModelConfig.from_dir(folder)
                    assert describe_hf(folder)
                    convert()
                else:
                    config = ModelConfig.from_dir(folder)
                    vocab = load_gguf_vocab(folder, config.vocab_size, config.raw)
                    assert len(vocab.tokens) == config.vocab_size
                    load_tokenizer(folder)  # the calibration builder's tokenizer, through transformers
            finally:
                target.write_bytes(original)

        return Kind(work / f"case-{name}", _mix(data, text_fields(data), data, trunc_share=0.1), run, ".json", data)
    raise SystemExit(f"unknown kind {name}")


def _manifest_cases(data: bytes, manifest: bytes, n: int, rng: random.Random) -> Iterator[Case]:
    """JSON mutations of the calibration manifest, saved back into the file's metadata."""
    from safetensors.torch import load, save

    tensors = load(data)
    for case in json_mutations(manifest, n, rng):
        text = case.data.decode("utf-8", errors="surrogateescape")
        try:
            yield Case("manifest " + case.name, save(tensors, metadata={"qconvert.calibration": text}))
        except Exception:  # noqa: BLE001 - a lone surrogate cannot go into the metadata: replace it
            yield Case("manifest (unencodable) " + case.name, save(tensors, metadata={"qconvert.calibration": text.encode("utf-8", "replace").decode()}))


def _outcome(run: Callable[[Path], None], path: Path) -> tuple[str, str]:
    def on_alarm(signum, frame):
        raise Hang(f"still running after {CASE_SECONDS} s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
    try:
        run(path)
        return "valid", ""
    except QConvertError as exc:
        message = str(exc)
        if "\n" in message or not message.strip() or len(message) > MAX_ERROR_CHARS:
            return "other", f"QConvertError message is not one readable line: {message[:3000]!r}"
        return "error", message
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: BLE001 - anything else is what this test looks for
        return "other", traceback.format_exc(limit=-8)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind")
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--keep", type=int, default=0)
    ap.add_argument("--hf-model", type=Path, default=None)
    args = ap.parse_args()
    import logging

    logging.disable(logging.WARNING)  # the converter's warnings about odd-but-valid inputs
    kind = build_kind(args.kind, args.work, args.hf_model)
    rng = random.Random(f"{args.kind}:{args.seed}")
    cases = list(kind.cases(args.cases, rng))
    # The seed itself first: it must give a valid output (and it warms up imports and thread
    # pools); then the address space is capped.
    warm = kind.target_file
    warm.write_bytes(kind.seed)
    outcome, detail = _outcome(kind.run, warm)
    if outcome != "valid":
        raise SystemExit(f"the {args.kind} seed itself is not valid: {detail}")
    cap = _vm_size() + MEMORY_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    counts = {"error": 0, "valid": 0, "other": 0}
    others, kept = [], {"error": 0, "valid": 0}
    slowest = (0.0, "")
    started = time.perf_counter()
    progress = args.work / "current-case.txt"
    for i, case in enumerate(cases):
        progress.write_text(f"{i}: {case.name}\n")
        warm.write_bytes(case.data)
        t0 = time.perf_counter()
        outcome, detail = _outcome(kind.run, warm)
        elapsed = time.perf_counter() - t0
        slowest = max(slowest, (elapsed, case.name))
        counts[outcome] += 1
        if outcome == "other":
            others.append({"case": i, "name": case.name, "detail": detail})
        elif kept[outcome] < args.keep:
            kept[outcome] += 1
            keep_dir = args.work / "kept"
            keep_dir.mkdir(exist_ok=True)
            (keep_dir / f"{i:05d}-{outcome}{kind.suffix}").write_bytes(case.data)
            (keep_dir / f"{i:05d}-{outcome}.txt").write_text(f"{case.name}\n{detail}\n")
    result = {
        "kind": args.kind, "seed": args.seed, "cases": len(cases), **counts, "others": others[:20],
        "seconds": round(time.perf_counter() - started, 2), "slowest_case_s": round(slowest[0], 3), "slowest_case": slowest[1],
        "rss_growth_mb": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024, 1), "address_space_cap_mb": cap >> 20,
    }
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "others"}))
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: torch's at-exit hooks are slow and can trip over the cap


if __name__ == "__main__":
    main()
