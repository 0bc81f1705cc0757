"""The stage kinds, all with one interface: `run(call) -> result`.

A stage reads its inputs (paths: upstream outputs, or files from outside the run), writes what it
makes into `call.out` (an empty folder of its own), and returns a JSON-able result: the artefact's
file name inside `call.out` and what it measured. Nothing else is shared, so a stage can run in
this process, in a worker process, or on another machine.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class StageCall:
    kind: str
    options: dict
    inputs: dict[str, Path]  # role → the upstream artefact (a file or a folder)
    out: Path
    progress: bool = True


def _threads(call: StageCall) -> int | None:
    return call.options.get("threads") or None


def _run_options(call: StageCall):
    from qconvert.layerwise.session import RunOptions, parse_compute_dtype

    o = call.options
    return RunOptions(device=o["device"], threads=_threads(call), progress=call.progress, dtype=parse_compute_dtype(o["compute_dtype"], o["device"]))


def _calib_input(call: StageCall):
    from qconvert.calib.types import CalibInput

    return CalibInput(file=call.inputs["calibration"])


def size_on_disk(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def parameter_count(model_dir: Path) -> int:
    from qconvert.hf.safetensors_reader import SafetensorsCheckpoint

    return SafetensorsCheckpoint.open(model_dir).n_parameters


def weight_bytes(path: Path) -> int:
    """Bytes of tensor data in a GGUF file or a safetensors folder (scales, zeros and indices
    included; metadata and the GGUF's tokenizer not)."""
    if path.is_dir():
        from qconvert.hf.safetensors_reader import SafetensorsCheckpoint

        return sum(e.nbytes for e in SafetensorsCheckpoint.open(path).entries.values())
    from gguf import GGML_QUANT_SIZES

    from qconvert.gguf_read import read_gguf_header

    total = 0
    for t in read_gguf_header(path).tensors:
        block, size = GGML_QUANT_SIZES[t.type]
        total += int(np.prod(t.shape, dtype=np.int64)) // block * size
    return total


def bits_per_weight(path: Path, original: Path) -> float:
    """As llama.cpp counts it: tensor data bits over the original model's parameter count."""
    return 8 * weight_bytes(path) / parameter_count(original)


def _artefact(call: StageCall, name: str, original: Path) -> dict:
    return {"artifact": name, "size_bytes": size_on_disk(call.out / name), "bits_per_weight": bits_per_weight(call.out / name, original)}


def run_calib(call: StageCall) -> dict:
    from qconvert.calib.build import build_calibration_file
    from qconvert.calib.types import CalibRequest, SamplingOptions, SampleMode, SourceSpec

    o = call.options
    sources = tuple(SourceSpec(path) for role, path in sorted(call.inputs.items()) if role.startswith("source"))
    sampling = SamplingOptions(n_samples=o["n_samples"], seqlen=o["seqlen"], mode=SampleMode(o["mode"]), min_tokens=o["min_tokens"], seed=o["seed"])
    made = build_calibration_file(call.inputs["model"], call.out / "calib.safetensors", CalibRequest(sources, sampling), progress=call.progress)
    return {"artifact": "calib.safetensors", "summary": made.summary()}


def run_imatrix(call: StageCall) -> dict:
    from qconvert.imatrix.compute import compute_imatrix
    from qconvert.imatrix.file import write_imatrix

    write_imatrix(call.out / "imatrix.gguf", compute_imatrix(call.inputs["model"], _calib_input(call), _run_options(call)))
    return {"artifact": "imatrix.gguf"}


def run_gguf(call: StageCall) -> dict:
    from qconvert.convert.hf_to_gguf import ConvertOptions, convert_hf_to_gguf
    from qconvert.quant.file_types import parse_file_type

    o = call.options
    out = call.out / o["file_name"]
    options = ConvertOptions(file_type=parse_file_type(o["type"]), progress=call.progress, threads=_threads(call), imatrix=call.inputs.get("imatrix"))
    if o.get("gptq"):
        options = replace(options, gptq=True, calib=_calib_input(call), device=o["device"], compute_dtype=o["compute_dtype"])
    convert_hf_to_gguf(call.inputs["model"], out, options)
    result = _artefact(call, out.name, call.inputs["model"])
    if o["ollama"]:
        from qconvert.ollama import write_modelfile

        result["modelfile"] = write_modelfile(call.inputs["model"], out).name
    return result


def run_gptq(call: StageCall) -> dict:
    from qconvert.gptq.config import GPTQConfig
    from qconvert.gptq.run import quantize_gptq

    o = call.options
    config = GPTQConfig(bits=o["bits"], group_size=o["group_size"], sym=o["sym"], desc_act=o["desc_act"], static_groups=o["static_groups"], damp_percent=o["damp"])
    quantize_gptq(call.inputs["model"], call.out / "model", _calib_input(call), config, _run_options(call))
    return _artefact(call, "model", call.inputs["model"])


def run_awq(call: StageCall) -> dict:
    from qconvert.awq.config import AWQConfig
    from qconvert.awq.run import gguf_search_grid, quantize_awq

    o = call.options
    bits, group_size, zero_point, file_type = o["bits"], o["group_size"], o["zero_point"], None
    if o["gguf_type"] is not None:  # the scaled fp16 export a GGUF of that type is made from
        file_type, bits, group_size, zero_point = gguf_search_grid(call.inputs["model"], o["gguf_type"])
    config = AWQConfig(bits=bits, group_size=group_size, zero_point=zero_point, clip=file_type is None, export_compatible=file_type is not None, gguf_type=file_type)
    quantize_awq(call.inputs["model"], call.out / "model", _calib_input(call), config, _run_options(call))
    return _artefact(call, "model", call.inputs["model"])


def run_eval(call: StageCall) -> dict:
    from qconvert.ppl.measure import measure_perplexity
    from qconvert.ppl.result import PplOptions

    o = call.options
    options = PplOptions(ctx=o["ctx"], chunks=o["chunks"] or None, threads=_threads(call))
    result = measure_perplexity(call.inputs["model"], call.inputs["text"], options, call.inputs.get("base"), progress=call.progress)
    return result.to_json_dict()


STAGE_KINDS: dict[str, Callable[[StageCall], dict]] = {
    "calib": run_calib,
    "imatrix": run_imatrix,
    "gguf": run_gguf,
    "gptq": run_gptq,
    "awq": run_awq,
    "eval": run_eval,
}
