"""The stage graph of a recipe: calibration → imatrix / GPTQ / AWQ → GGUF types → evaluations.

A stage is plain data: its kind, its options (JSON values) and its inputs (role → upstream stage
name). Its key hashes the kind, the options, the inputs' keys and the qconvert version, so a
finished stage is found again by key, and a changed option changes the key of that stage and of
everything downstream, and of nothing else. Files from outside the run (the model, the texts) are
`source` stages whose key is a fingerprint of their content.

A release matrix ([[models]]) is the union of its models' graphs: their stages are named
`LABEL/STAGE`, and a stage whose key another model's stage already has is that stage, run once —
the f16 conversion of two variants of one model, or the calibration set of models that share a
tokenizer (its key fingerprints the tokenizer, not the weights).
"""

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from qconvert import __version__
from qconvert.pipeline.recipe import Recipe, Release

# What a calibration set depends on in a model folder: the tokenizer files transformers reads, and
# the config keys it picks the tokenizer class by.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "merges.txt", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "chat_template.json")
TOKENIZER_CONFIG_KEYS = ("model_type", "tokenizer_class")
IMATRIX_BLIND = {"q8_0"}  # its quantizer ignores importance weights, as llama.cpp's does
_HASHED_FILE_LIMIT = 64 << 20  # larger files (weights) are fingerprinted by size and mtime, not read


@dataclass(frozen=True)
class Stage:
    name: str  # unique in the plan: it names the stage's folder and the report's rows
    kind: str  # a key of qconvert.pipeline.stages.STAGE_KINDS, or "source"
    options: dict  # JSON values only
    inputs: dict[str, str] = field(default_factory=dict)  # role → upstream stage name
    key: str = ""

    @property
    def folder_name(self) -> str:
        return f"{self.name}-{self.key}"  # in a matrix, "LABEL/STAGE-KEY": a folder per model


def _file_digest(path: Path, h) -> None:
    st = path.stat()
    h.update(f"{st.st_size}\0".encode())
    if st.st_size <= _HASHED_FILE_LIMIT:
        h.update(hashlib.sha256(path.read_bytes()).digest())
    else:
        h.update(f"{st.st_mtime_ns}\0".encode())


def fingerprint(path: Path) -> str:
    """A digest of a file or folder's content (for big files: size and modification time)."""
    h = hashlib.sha256()
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                file = Path(root) / name
                h.update(f"{file.relative_to(path)}\0".encode())
                _file_digest(file, h)
    else:
        _file_digest(path, h)
    return h.hexdigest()[:16]


def tokenizer_fingerprint(model_dir: Path) -> str:
    """A digest of a model folder's tokenizer: equal for the sizes of one model family."""
    h = hashlib.sha256(b"tokenizer\0")
    for name in TOKENIZER_FILES:
        if (model_dir / name).is_file():
            h.update(f"{name}\0".encode())
            _file_digest(model_dir / name, h)
    config = json.loads((model_dir / "config.json").read_text())
    h.update(json.dumps({k: config.get(k) for k in TOKENIZER_CONFIG_KEYS}, sort_keys=True).encode())
    return h.hexdigest()[:16]


class _Builder:
    def __init__(self) -> None:
        self.stages: dict[str, Stage] = {}
        self._by_key: dict[str, str] = {}
        self.prefix = ""  # "LABEL/" while a matrix's model is added

    def add(self, name: str, kind: str, options: dict, inputs: dict[str, str] | None = None, key: str | None = None) -> str:
        """The stage's name in the plan: a new stage, or the one (of another model) with its key."""
        inputs = inputs or {}
        if key is None:
            payload = {"kind": kind, "options": options, "inputs": {role: self.stages[up].key for role, up in sorted(inputs.items())}, "version": __version__}
            key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]
        if key in self._by_key:
            return self._by_key[key]
        name = self.prefix + name
        assert name not in self.stages, name
        self.stages[name] = Stage(name, kind, options, inputs, key)
        self._by_key[key] = name
        return name

    def source(self, name: str, path: Path, key: str | None = None) -> str:
        return self.add(name, "source", {"path": str(path)}, key=key or fingerprint(path))


def _gguf_name(file_type: str, imatrix: bool, awq: bool = False, gptq: bool = False) -> str:
    return f"gguf-{file_type}" + ("-awq" if awq else "") + ("-imatrix" if imatrix else "") + ("-gptq" if gptq else "")


def build_plan(release: Release) -> list[Stage]:
    """Every stage of every model of the recipe, each after its inputs."""
    b = _Builder()
    for recipe in release.recipes:
        b.prefix = f"{recipe.label}/" if release.matrix else ""
        _add_model(b, recipe)
    return list(b.stages.values())


def _add_model(b: _Builder, recipe: Recipe) -> None:
    run = {"device": recipe.run.device, "compute_dtype": recipe.run.compute_dtype, "threads": recipe.run.threads}
    model = b.source("model", recipe.model.path)
    text = b.source("eval-text", recipe.eval.text)
    measure = {"ctx": recipe.eval.ctx, "chunks": recipe.eval.chunks, "threads": recipe.run.threads}

    calib = None
    if recipe.needs_calibration:
        c = recipe.calibration
        if c.file is not None:
            calib = b.source("calibration", c.file)
        else:
            sources = [b.source(f"calibration-source-{i}", p) for i, p in enumerate(c.sources)]
            options = {"n_samples": c.n_samples, "seqlen": c.seqlen, "mode": c.mode, "min_tokens": c.min_tokens, "seed": c.seed}
            tokenizer = b.source("tokenizer", recipe.model.path, key=tokenizer_fingerprint(recipe.model.path))
            calib = b.add("calibration", "calib", options, {"model": tokenizer, **{f"source{i}": s for i, s in enumerate(sources)}})

    artefacts: list[tuple[str, str, str]] = []  # (artefact's name in this model, its stage, the baseline of its KLD)
    b.add("eval-hf", "eval", measure, {"model": model, "text": text})

    gguf_recipe = recipe.gguf
    ollama = bool(gguf_recipe and gguf_recipe.ollama)
    awq_types = recipe.awq.gguf_types if recipe.awq else []
    if gguf_recipe is not None or awq_types:
        f16 = b.add("gguf-f16", "gguf", {"type": "f16", "ollama": ollama, "file_name": f"{recipe.name}-f16.gguf", "threads": recipe.run.threads}, {"model": model})
        b.add("eval-gguf-f16", "eval", measure, {"model": f16, "text": text})
    with_imatrix = {True: [True], False: [False], "both": [False, True]}[gguf_recipe.imatrix if gguf_recipe else False]

    def add_gguf(file_type: str, source: str, imatrix: bool, awq: bool, gptq: bool = False) -> None:
        inputs = {"model": source}
        if imatrix:
            inputs["imatrix"] = b.add("imatrix-awq-" + file_type if awq else "imatrix", "imatrix", run, {"model": source, "calibration": calib})
        name = _gguf_name(file_type, imatrix, awq, gptq)
        options = {"type": file_type, "ollama": ollama, "file_name": f"{recipe.name}-{name.removeprefix('gguf-')}.gguf", "threads": recipe.run.threads}
        if gptq:  # rounded inside the blocks, on the layer-wise driver: it calibrates like the other layer-wise stages
            inputs["calibration"] = calib
            options |= {**run, "gptq": True}
        artefacts.append((name, b.add(name, "gguf", options, inputs), f16))

    gguf_gptq = gguf_recipe is not None and gguf_recipe.gptq

    if gguf_recipe is not None:
        for file_type in gguf_recipe.types:
            if file_type.lower() == "f16":
                continue  # the baseline, made anyway
            for imatrix in with_imatrix:
                if not (imatrix and file_type.lower() in IMATRIX_BLIND):
                    add_gguf(file_type.lower(), model, imatrix, awq=False)
            if gguf_gptq:
                add_gguf(file_type.lower(), model, False, awq=False, gptq=True)

    for section in recipe.gptq:
        options = {"bits": section.bits, "group_size": section.group_size, "sym": section.sym, "desc_act": section.desc_act, "static_groups": section.static_groups, "damp": section.damp, **run}
        name = f"gptq-w{section.bits}-g{section.group_size}" + ("" if section.sym else "-asym") + ("-act" if section.desc_act else "") + ("-static" if section.static_groups else "")
        artefacts.append((name, b.add(name, "gptq", options, {"model": model, "calibration": calib}), model))

    if recipe.awq is not None:
        a = recipe.awq
        grid = {"bits": a.bits, "group_size": a.group_size, "zero_point": a.zero_point}
        if a.packed:
            name = f"awq-w{a.bits}-g{a.group_size}"
            artefacts.append((name, b.add(name, "awq", {**grid, "gguf_type": None, **run}, {"model": model, "calibration": calib}), model))
        for file_type in a.gguf_types:
            scaled = b.add(f"awq-scaled-{file_type.lower()}", "awq", {**grid, "gguf_type": file_type.lower(), **run}, {"model": model, "calibration": calib})
            for imatrix in with_imatrix:
                add_gguf(file_type.lower(), scaled, imatrix, awq=True)
            if gguf_gptq:
                add_gguf(file_type.lower(), scaled, False, awq=True, gptq=True)

    for name, artefact, base in artefacts:
        b.add(f"eval-{name}", "eval", measure, {"model": artefact, "text": text, "base": base})
