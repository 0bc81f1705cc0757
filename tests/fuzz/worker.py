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
from tests.fuzz.mutate import Case, byte_mutations, json_mutations, text_fields, toml_fields, toml_mutations, truncations, varint_mutations

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
    """The output reads back, and holds only tensors it should (`names`)."""
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

    if name == "recipe":
        return _recipe_kind(work, hf_model)

    # The Hugging Face folder kinds: one file of a copy of the model is replaced by each case.
    from qconvert.convert.hf_to_gguf import ConvertOptions, convert_hf_to_gguf
    from qconvert.hf.config import ModelConfig
    from qconvert.hf.safetensors_reader import SafetensorsCheckpoint
    from qconvert.inspect_model import describe_hf

    folder = work / "model"
    makers = {"safetensors-index": seeds.make_sharded, "tokenizer.model": seeds.make_spm_model,
              "gptq-checkpoint": seeds.make_gptq_model, "awq-checkpoint": seeds.make_awq_model}
    if name in makers:
        makers[name](hf_model, folder)
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
    if name == "tokenizer.model":
        from qconvert.hf import tokenizer as hf_tokenizer

        target = folder / "tokenizer.model"
        data = target.read_bytes()
        fields = seeds.protobuf_fields(data)

        tok_config = (folder / "tokenizer_config.json").read_bytes()

        def cases(n: int, rng: random.Random) -> Iterator[Case]:
            n_varint, n_config = n // 3, n // 8
            yield from _mix(data, fields, trunc_share=0.15)(n - n_varint - n_config, rng)
            yield from varint_mutations(data, fields, n_varint, rng)
            for case in json_mutations(tok_config, n_config, rng):  # what spm_vocab reads of it: added_tokens_decoder
                yield Case("tokenizer_config.json: " + case.name, TOKENIZER_CONFIG_MARK + case.data)

        def run(p: Path) -> None:
            raw = p.read_bytes()
            if raw.startswith(TOKENIZER_CONFIG_MARK):
                (folder / "tokenizer_config.json").write_bytes(raw.removeprefix(TOKENIZER_CONFIG_MARK))
            else:
                shutil.copyfile(p, target)
            try:
                config = ModelConfig.from_dir(folder)
                vocab = hf_tokenizer.load_gguf_vocab(folder, config.vocab_size, config.raw)
                assert vocab.model == "llama" and len(vocab.tokens) == len(vocab.scores) == len(vocab.token_types) == config.vocab_size
                convert()
            finally:
                target.write_bytes(data)
                (folder / "tokenizer_config.json").write_bytes(tok_config)

        return Kind(work / "case.model", cases, run, ".model", data)

    if name in ("gptq-checkpoint", "awq-checkpoint"):
        from qconvert.hf.dequantized import open_checkpoint

        weights = (folder / "model.safetensors").read_bytes()
        config_text = (folder / "config.json").read_bytes()

        def cases(n: int, rng: random.Random) -> Iterator[Case]:
            n_config, n_packed, n_header = n // 4, n // 4, n // 6
            for case in _quantization_config_cases(config_text, n_config, rng):
                yield Case("config.json: " + case.name, CONFIG_MARK + case.data)
            yield from _packed_cases(weights, n_packed, rng)
            yield from _safetensors_header_cases(weights, n_header, rng)
            yield from _mix(weights, seeds.safetensors_fields(weights))(n - n_config - n_packed - n_header, rng)

        def run(p: Path) -> None:
            raw = p.read_bytes()
            target = folder / ("config.json" if raw.startswith(CONFIG_MARK) else "model.safetensors")
            original = target.read_bytes()
            target.write_bytes(raw.removeprefix(CONFIG_MARK))
            try:
                config = ModelConfig.from_dir(folder)
                ckpt = open_checkpoint(folder, config.raw)
                for entry_name, entry in ckpt.entries.items():  # every dense weight, unpacked
                    assert ckpt.load(entry_name).shape == entry.shape, entry_name
                convert()
            finally:
                target.write_bytes(original)

        return Kind(work / "case.bin", cases, run, ".bin", weights)
    raise SystemExit(f"unknown kind {name}")


CONFIG_MARK = b"CONFIG"  # a GPTQ/AWQ case that replaces config.json, not the weights
TOKENIZER_CONFIG_MARK = b"TOKCFG"  # a tokenizer.model case that replaces tokenizer_config.json


def _quantization_config_cases(config_text: bytes, n: int, rng: random.Random) -> Iterator[Case]:
    """JSON mutations of config.json's quantization_config only (the rest has its own kind), and of
    its keys set to the values a GPTQ/AWQ reader branches on."""
    config = json.loads(config_text)
    qc = json.dumps(config["quantization_config"]).encode()
    keys = ("bits", "group_size", "desc_act", "sym", "checkpoint_format", "format", "zero_point", "version", "quant_method")
    choices = (2, 3, 4, 8, 5, 16, 0, -1, 32, 64, 128, 2**31, True, None, "4", "gptq", "gptq_v2", "awq", "gemm", "gemv", "GEMM", "marlin", 1.5)
    for i in range(n):
        if i % 2:
            key, value = rng.choice(keys), rng.choice(choices)
            edited = dict(config["quantization_config"], **{key: value})
            name = f"set quantization_config.{key} = {value!r}"
            yield Case(name, json.dumps({**config, "quantization_config": edited}, indent=2).encode())
        else:
            case = next(json_mutations(qc, 1, rng))
            text = case.data.decode("utf-8", errors="surrogatepass")
            # spliced back as text: the mutations' NaN and deep nestings survive
            doc = json.dumps({**config, "quantization_config": "@@QC@@"}, indent=2)
            yield Case("quantization_config " + case.name, doc.replace('"@@QC@@"', text).encode("utf-8", errors="surrogatepass"))


def _packed_cases(data: bytes, n: int, rng: random.Random) -> Iterator[Case]:
    """The packed tensors of one quantized linear changed and saved back as a valid safetensors file:
    another shape, another dtype, out-of-range values (g_idx past the groups or negative, NaN and
    infinite scales), a tensor dropped, renamed or added alone."""
    import numpy as np
    from safetensors.numpy import load, save

    seed = load(data)
    packed = sorted(k for k in seed if k.rsplit(".", 1)[-1] in ("qweight", "qzeros", "scales", "g_idx"))
    for _ in range(n):
        tensors = dict(seed)
        name = rng.choice(packed)
        t = tensors[name]
        op = rng.choice(("shape", "shape", "dtype", "values", "values", "values", "drop", "rename", "stray"))
        if op == "shape":
            how = rng.choice(("drop a row", "drop a column", "transpose", "flatten", "add an axis", "empty", "double rows", "double columns"))
            t = {"drop a row": lambda: t[:-1], "drop a column": lambda: t[..., :-1], "transpose": lambda: t.T, "flatten": lambda: t.reshape(-1),
                 "add an axis": lambda: t[None], "empty": lambda: t[:0], "double rows": lambda: np.concatenate([t, t]),
                 "double columns": lambda: np.concatenate([t, t], axis=-1)}[how]()
            what = f"{how} of {name} {seed[name].shape}"
        elif op == "dtype":
            dtype = rng.choice((np.int8, np.uint8, np.int16, np.int64, np.float16, np.float32, np.float64, np.bool_))
            t = t.astype(dtype) if rng.random() < 0.5 or t.nbytes % np.dtype(dtype).itemsize else t.view(dtype)
            what = f"{name} as {np.dtype(dtype).name} {t.shape}"
        elif op == "values":
            t = t.copy()
            flat = t.reshape(-1)
            if t.dtype == np.float16:
                value = rng.choice((np.nan, np.inf, -np.inf, 0.0, -1.0, 65504.0))
            else:
                value = rng.choice((-1, -(2**31), 2**31 - 1, 64, 4, 1 << 30, int(flat.max()) + 1))
            idx = rng.randrange(flat.size) if rng.random() < 0.7 else slice(None)
            flat[idx] = value
            what = f"{name}[{'all' if isinstance(idx, slice) else idx}] = {value}"
        elif op == "drop":
            del tensors[name]
            yield Case(f"packed: drop {name}", save(tensors, metadata={"format": "pt"}))
            continue
        elif op == "rename":
            new = name + rng.choice(("_", ".x", "2"))
            tensors[new] = tensors.pop(name)
            yield Case(f"packed: rename {name} to {new}", save(tensors, metadata={"format": "pt"}))
            continue
        else:
            prefix = rng.choice(("model.layers.0.mlp.stray", "model.layers.9.self_attn.q_proj", "lm_head", "x"))
            new = f"{prefix}.{name.rsplit('.', 1)[-1]}"
            tensors[new] = t
            yield Case(f"packed: {name} also as {new}", save(tensors, metadata={"format": "pt"}))
            continue
        tensors[name] = np.ascontiguousarray(t)
        yield Case(f"packed: {what}", save(tensors, metadata={"format": "pt"}))


def _recipe_kind(work: Path, hf_model: Path) -> Kind:
    """A recipe and a release matrix beside the small model: each case is load_recipe + build_plan."""
    from qconvert.pipeline.plan import build_plan
    from qconvert.pipeline.recipe import load_recipe

    folder = seeds.make_recipe_folder(hf_model, work / "recipe")
    data, matrix = (folder / "recipe.toml").read_bytes(), (folder / "matrix.toml").read_bytes()

    def cases(n: int, rng: random.Random) -> Iterator[Case]:
        n_bytes, n_matrix = n // 5, n // 4
        cuts = truncations(data, toml_fields(data), n // 10)  # fewer where the recipe has fewer boundaries
        yield from cuts
        yield from byte_mutations(data, toml_fields(data), n_bytes, rng)
        for case in toml_mutations(matrix, n_matrix, rng):
            yield Case("matrix " + case.name, case.data)
        yield from toml_mutations(data, n - len(cuts) - n_bytes - n_matrix, rng)

    def run(p: Path) -> None:
        plan = build_plan(load_recipe(p))
        names = {s.name for s in plan}
        assert plan and len(names) == len(plan), "stage names repeat"
        for stage in plan:
            assert set(stage.inputs.values()) <= names, (stage.name, stage.inputs)
            json.dumps(stage.options, allow_nan=False)  # options are plain JSON
            if stage.kind == "source":
                assert Path(stage.options["path"]).exists(), stage.options

    return Kind(folder / "case.toml", cases, run, ".toml", data)


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
