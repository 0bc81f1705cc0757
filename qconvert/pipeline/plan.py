"""The stage graph of a recipe: calibration → imatrix / GPTQ / AWQ → GGUF types → evaluations.

A stage is plain data: its kind, its options (JSON values) and its inputs (role → upstream stage
name). Its key hashes the kind, the options, the inputs' keys and the qconvert version, so a
finished stage is found again by key, and a changed option changes the key of that stage and of
everything downstream, and of nothing else. Files from outside the run (the model, the texts) are
`source` stages whose key is a fingerprint of their content.
"""

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from qconvert import __version__
from qconvert.pipeline.recipe import Recipe

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
        return f"{self.name}-{self.key}"


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


class _Builder:
    def __init__(self) -> None:
        self.stages: dict[str, Stage] = {}

    def add(self, name: str, kind: str, options: dict, inputs: dict[str, str] | None = None, key: str | None = None) -> str:
        inputs = inputs or {}
        if key is None:
            payload = {"kind": kind, "options": options, "inputs": {role: self.stages[up].key for role, up in sorted(inputs.items())}, "version": __version__}
            key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]
        assert name not in self.stages, name
        self.stages[name] = Stage(name, kind, options, inputs, key)
        return name

    def source(self, name: str, path: Path) -> str:
        return self.add(name, "source", {"path": str(path)}, key=fingerprint(path))


def _gguf_name(file_type: str, imatrix: bool, awq: bool = False) -> str:
    return f"gguf-{file_type}" + ("-awq" if awq else "") + ("-imatrix" if imatrix else "")


def build_plan(recipe: Recipe) -> list[Stage]:
    """Every stage of the recipe, each after its inputs."""
    b = _Builder()
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
            calib = b.add("calibration", "calib", options, {"model": model, **{f"source{i}": s for i, s in enumerate(sources)}})

    artefacts: list[tuple[str, str]] = []  # (artefact stage, the baseline its KLD is measured against)
    b.add("eval-hf", "eval", measure, {"model": model, "text": text})

    gguf_recipe = recipe.gguf
    ollama = bool(gguf_recipe and gguf_recipe.ollama)
    awq_types = recipe.awq.gguf_types if recipe.awq else []
    if gguf_recipe is not None or awq_types:
        f16 = b.add("gguf-f16", "gguf", {"type": "f16", "ollama": ollama, "file_name": f"{recipe.name}-f16.gguf", "threads": recipe.run.threads}, {"model": model})
        b.add("eval-gguf-f16", "eval", measure, {"model": f16, "text": text})
    with_imatrix = {True: [True], False: [False], "both": [False, True]}[gguf_recipe.imatrix if gguf_recipe else False]

    def add_gguf(file_type: str, source: str, imatrix: bool, awq: bool) -> None:
        inputs = {"model": source}
        if imatrix:
            matrix_name = "imatrix-awq-" + file_type if awq else "imatrix"
            if matrix_name not in b.stages:
                b.add(matrix_name, "imatrix", run, {"model": source, "calibration": calib})
            inputs["imatrix"] = matrix_name
        name = _gguf_name(file_type, imatrix, awq)
        options = {"type": file_type, "ollama": ollama, "file_name": f"{recipe.name}-{name.removeprefix('gguf-')}.gguf", "threads": recipe.run.threads}
        artefacts.append((b.add(name, "gguf", options, inputs), f16))

    if gguf_recipe is not None:
        for file_type in gguf_recipe.types:
            if file_type.lower() == "f16":
                continue  # the baseline, made anyway
            for imatrix in with_imatrix:
                if not (imatrix and file_type.lower() in IMATRIX_BLIND):
                    add_gguf(file_type.lower(), model, imatrix, awq=False)

    for section in recipe.gptq:
        options = {"bits": section.bits, "group_size": section.group_size, "sym": section.sym, "desc_act": section.desc_act, "static_groups": section.static_groups, "damp": section.damp, **run}
        name = f"gptq-w{section.bits}-g{section.group_size}" + ("" if section.sym else "-asym") + ("-act" if section.desc_act else "") + ("-static" if section.static_groups else "")
        artefacts.append((b.add(name, "gptq", options, {"model": model, "calibration": calib}), model))

    if recipe.awq is not None:
        a = recipe.awq
        grid = {"bits": a.bits, "group_size": a.group_size, "zero_point": a.zero_point}
        if a.packed:
            name = f"awq-w{a.bits}-g{a.group_size}"
            artefacts.append((b.add(name, "awq", {**grid, "gguf_type": None, **run}, {"model": model, "calibration": calib}), model))
        for file_type in a.gguf_types:
            scaled = b.add(f"awq-scaled-{file_type.lower()}", "awq", {**grid, "gguf_type": file_type.lower(), **run}, {"model": model, "calibration": calib})
            for imatrix in with_imatrix:
                add_gguf(file_type.lower(), scaled, imatrix, awq=True)

    for artefact, base in artefacts:
        b.add(f"eval-{artefact}", "eval", measure, {"model": artefact, "text": text, "base": base})
    return list(b.stages.values())
