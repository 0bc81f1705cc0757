"""The `qconvert` command line: a thin layer over the library. Every user error becomes one line on
stderr and exit code 2; Ctrl-C stops with exit code 130 and leaves no partial output."""

import json
import logging
import os
import sys
from pathlib import Path

import click

from qconvert import __version__
from qconvert.calib.types import CalibInput, CalibRequest
from qconvert.cli_options import calibration_options, optional_calibration_options, source_options  # light: click and dataclasses only
from qconvert.errors import QConvertError, caused_by_interrupt

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except QConvertError as exc:
            click.echo(f"qconvert: error: {exc}", err=True)
            sys.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt:
            _interrupted()
        except Exception as exc:
            if caused_by_interrupt(exc):  # e.g. transformers turns an interrupted lazy import into an ImportError
                _interrupted()
            raise


def _interrupted() -> None:
    click.echo("qconvert: interrupted; no output was written", err=True)
    # Partial outputs were removed while the exception unwound. Leave at once: once, in CI, a
    # gptq run died by SIGINT after this line (exit -2, not 130) during interpreter shutdown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


def _progress() -> bool:
    return sys.stderr.isatty()


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="qconvert")
@click.option("-v", "--verbose", is_flag=True, help="Log what each stage does.")
def main(verbose: bool) -> None:
    """Quantize and convert LLM checkpoints, and measure them."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@main.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="The GGUF file to write.")
@click.option("--type", "file_type", default="f16", show_default=True, help="llama.cpp file type: f16, bf16, f32, q8_0, q4_k_m, ... (an unknown one lists them all).")
@click.option("--imatrix", "imatrix", type=click.Path(path_type=Path), default=None, help="Quantize with this importance matrix (GGUF or legacy .dat, from `qconvert imatrix` or llama-imatrix).")
@optional_calibration_options
@click.option("--imatrix-out", type=click.Path(path_type=Path), default=None, help="Also write the importance matrix computed in-line from the calibration options to this file.")
@click.option("--gptq", is_flag=True, help="Round the decoder layers' weights with GPTQ's error compensation inside their GGUF blocks (needs calibration options; same types and size as --imatrix gives).")
@click.option("--awq-scale", is_flag=True, help="First fold AWQ scales, searched against this type's block grid, into the weights (needs calibration options).")
@click.option("--device", default="cpu", show_default=True, help="Device of the in-line calibration work (importance matrix, GPTQ, AWQ): cpu or cuda.")
@click.option("--compute-dtype", default="auto", show_default=True, help="Precision of the in-line calibration forwards (see `qconvert imatrix`).")
@click.option("--threads", type=int, default=None, help="Quantizer threads (default: all cores).")
@click.option("--modelfile", is_flag=True, help="Also write an Ollama Modelfile beside the GGUF (OUT's name, .Modelfile): FROM, the chat template as TEMPLATE, stop tokens, sampling defaults.")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
def gguf(model_dir: Path, out: Path, file_type: str, imatrix: Path | None, calib_input: CalibInput | None, imatrix_out: Path | None, gptq: bool, awq_scale: bool, device: str, compute_dtype: str, threads: int | None, modelfile: bool, force: bool) -> None:
    """Convert a Hugging Face checkpoint (MODEL_DIR) to a GGUF file for llama.cpp, quantized or not.

    With --calib FILE (or --source ... or any calibration option) the importance matrix is computed
    from that calibration set and the weights are quantized with it, in this one command; --gptq
    rounds them with GPTQ inside the blocks instead, --awq-scale folds AWQ scales in first."""
    from qconvert.convert.hf_to_gguf import ConvertOptions, convert_hf_to_gguf
    from qconvert.quant.file_types import parse_file_type

    options = ConvertOptions(
        file_type=parse_file_type(file_type), force=force, progress=_progress(), threads=threads, imatrix=imatrix, calib=calib_input, imatrix_out=imatrix_out, device=device, compute_dtype=compute_dtype,
        gptq=gptq, awq_scale=awq_scale,
    )
    if modelfile:  # the chat template's translation is checked before any work
        from qconvert.ollama import default_modelfile_path, modelfile_text, write_modelfile
        from qconvert.outputs import check_output_path

        check_output_path(default_modelfile_path(out), force)
        modelfile_text(model_dir, out, default_modelfile_path(out))
    convert_hf_to_gguf(model_dir, out, options)
    click.echo(f"wrote {out}")
    if modelfile:
        click.echo(f"wrote {write_modelfile(model_dir, out, force=force)}")


@main.command()
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.argument("file_type")
@click.option("--imatrix", "imatrix", type=click.Path(path_type=Path), default=None, help="Quantize with this importance matrix (GGUF or legacy .dat), as llama-quantize --imatrix.")
@click.option("--threads", type=int, default=None, help="Quantizer threads (default: all cores).")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
def quantize(src: Path, dst: Path, file_type: str, imatrix: Path | None, threads: int | None, force: bool) -> None:
    """Quantize the GGUF file SRC (f32/f16/bf16) to DST with FILE_TYPE (q4_k_m, q8_0, ...), like llama-quantize."""
    from qconvert.quant.file_types import parse_file_type
    from qconvert.quant.gguf_quantize import QuantizeOptions, quantize_gguf

    options = QuantizeOptions(parse_file_type(file_type, "TYPE"), force=force, progress=_progress(), threads=threads, imatrix=imatrix)
    quantize_gguf(src, dst, options)
    click.echo(f"wrote {dst}")


@main.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@source_options
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="The calibration file to write (.safetensors).")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
def calib(model_dir: Path, calib_request: CalibRequest, out: Path, force: bool) -> None:
    """Build a reproducible calibration set with MODEL_DIR's tokenizer, for GPTQ, AWQ and imatrix."""
    from qconvert.calib.build import build_calibration_file

    result = build_calibration_file(model_dir, out, calib_request, force=force, progress=_progress())
    click.echo(f"wrote {out}: {result.summary()}")


@main.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@calibration_options
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="The importance matrix file to write (GGUF, as llama-imatrix writes).")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--compute-dtype", default="auto", show_default=True, help="Precision of the forwards: float32, bfloat16, float16; auto is bfloat16 where the hardware has it natively, else float32. Sums are float32.")
@click.option("--threads", type=int, default=None, help="CPU threads (default: torch's default, all cores).")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
def imatrix(model_dir: Path, calib_input: CalibInput, out: Path, device: str, compute_dtype: str, threads: int | None, force: bool) -> None:
    """Compute MODEL_DIR's importance matrix over a calibration set, for `quantize --imatrix` and llama-quantize."""
    from qconvert.imatrix.compute import compute_imatrix
    from qconvert.imatrix.file import write_imatrix
    from qconvert.layerwise.session import RunOptions, parse_compute_dtype
    from qconvert.outputs import check_output_path

    check_output_path(out, force)
    options = RunOptions(device=device, threads=threads, force=force, progress=_progress(), dtype=parse_compute_dtype(compute_dtype, device))
    write_imatrix(out, compute_imatrix(model_dir, calib_input, options), force)
    click.echo(f"wrote {out}")


@main.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@calibration_options
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="The GPTQ checkpoint folder to write.")
@click.option("--bits", type=int, default=4, show_default=True, help="Bits per weight: 2, 3, 4 or 8.")
@click.option("--group-size", type=int, default=128, show_default=True, help="Input columns per scale/zero group: 32, 64, 128, or -1 (one per output channel).")
@click.option("--desc-act", is_flag=True, help="Act-order: quantize columns in order of decreasing Hessian diagonal.")
@click.option("--static-groups", is_flag=True, help="Fix each group's grid before the solve (with --desc-act: groups stay contiguous).")
@click.option("--sym/--asym", default=True, show_default=True, help="Symmetric grid (zero point in the middle) or asymmetric.")
@click.option("--damp", type=float, default=0.01, show_default=True, help="Damping, as a fraction of the mean Hessian diagonal.")
@click.option("--true-sequential/--no-true-sequential", default=True, show_default=True, help="Capture each sub-layer's inputs after the sub-layers before it are quantized.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--compute-dtype", default="auto", show_default=True, help="Precision of the calibration forwards: float32, bfloat16, float16; auto is bfloat16 where the hardware computes it fast (CUDA, CPUs with AMX, AMD CPUs with AVX512-BF16), else float32. Hessians and the solve are float32.")
@click.option("--threads", type=int, default=None, help="CPU threads (default: torch's default, all cores).")
@click.option("--max-shard-size", default="4GB", show_default=True, help="Largest safetensors shard.")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
def gptq(model_dir: Path, calib_input: CalibInput, out: Path, bits: int, group_size: int, desc_act: bool, static_groups: bool, sym: bool, damp: float, true_sequential: bool, device: str, compute_dtype: str, threads: int | None, max_shard_size: str, force: bool) -> None:
    """Quantize MODEL_DIR with GPTQ into a checkpoint that transformers and vLLM load."""
    from qconvert.gptq.config import GPTQConfig
    from qconvert.gptq.run import quantize_gptq
    from qconvert.layerwise.session import RunOptions, parse_compute_dtype
    from qconvert.hf.shard_writer import parse_size

    config = GPTQConfig(bits=bits, group_size=group_size, sym=sym, desc_act=desc_act, static_groups=static_groups, damp_percent=damp, true_sequential=true_sequential)
    options = RunOptions(device=device, threads=threads, max_shard_bytes=parse_size(max_shard_size), force=force, progress=_progress(), dtype=parse_compute_dtype(compute_dtype, device))
    quantize_gptq(model_dir, out, calib_input, config, options)
    click.echo(f"wrote {out}")


@main.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@calibration_options
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="The checkpoint folder to write.")
@click.option("--bits", type=int, default=4, show_default=True, help="Bits per weight: 4 for a packed checkpoint; 2-8 steer the search with --export-compatible.")
@click.option("--group-size", type=int, default=128, show_default=True, help="Input columns per scale/zero group, or -1 (one per output channel).")
@click.option("--zero-point/--no-zero-point", default=True, show_default=True, help="Asymmetric grid with a zero point per group, or symmetric.")
@click.option("--clip/--no-clip", default=None, help="Search a clipping range per group (not for q/k) [default: on, off with --gguf-type: llama.cpp picks its own ranges].")
@click.option("--duo-scaling/--no-duo-scaling", default=True, show_default=True, help="Scales from activation and weight magnitudes (AutoAWQ's default), or activations alone.")
@click.option("--search-tokens", type=int, default=16384, show_default=True, help="Calibration tokens the scale search's loss runs on (evenly spread whole batches); 0: all, as AutoAWQ. Statistics use every token.")
@click.option("--export-compatible", is_flag=True, help="Write the scaled (and clipped) fp16 model, unquantized, for `qconvert gguf`.")
@click.option("--gguf-type", default=None, help="The GGUF type the export is for (q4_k_m, q3_k_m, ...; implies --export-compatible): each trial is quantized as llama.cpp will store that tensor.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--compute-dtype", default="auto", show_default=True, help="Precision of the forwards: float32, bfloat16, float16; auto is bfloat16 where the hardware has it natively, else float32. Scales, clipping and packing are float32.")
@click.option("--threads", type=int, default=None, help="CPU threads (default: torch's default, all cores).")
@click.option("--max-shard-size", default="4GB", show_default=True, help="Largest safetensors shard.")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
def awq(model_dir: Path, calib_input: CalibInput, out: Path, bits: int, group_size: int, zero_point: bool, clip: bool | None, duo_scaling: bool, search_tokens: int, export_compatible: bool, gguf_type: str | None, device: str, compute_dtype: str, threads: int | None, max_shard_size: str, force: bool) -> None:
    """Quantize MODEL_DIR with AWQ into a GEMM checkpoint, or bake AWQ's scaling into fp16 weights for a better GGUF."""
    from qconvert.awq.config import AWQConfig
    from qconvert.awq.run import gguf_search_grid, quantize_awq
    from qconvert.hf.shard_writer import parse_size
    from qconvert.layerwise.session import RunOptions, parse_compute_dtype

    file_type = None
    if gguf_type is not None:
        export_compatible = True
        file_type, bits, group_size, zero_point = gguf_search_grid(model_dir, gguf_type)
    if clip is None:
        clip = gguf_type is None
    config = AWQConfig(
        bits=bits, group_size=group_size, zero_point=zero_point, clip=clip, duo_scaling=duo_scaling, search_tokens=search_tokens, export_compatible=export_compatible, gguf_type=file_type
    )
    options = RunOptions(device=device, threads=threads, max_shard_bytes=parse_size(max_shard_size), force=force, progress=_progress(), dtype=parse_compute_dtype(compute_dtype, device))
    quantize_awq(model_dir, out, calib_input, config, options)
    click.echo(f"wrote {out}")


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--text", required=True, type=click.Path(path_type=Path), help="UTF-8 text to score.")
@click.option("--ctx", default=512, show_default=True, help="Tokens per chunk.")
@click.option("--chunks", type=int, default=None, help="Score at most this many chunks (default: all).")
@click.option("--kld-base", type=click.Path(path_type=Path), default=None, help="Also report KL divergence against this base model.")
@click.option("--threads", type=int, default=None, help="CPU threads (default: all cores).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def ppl(model: Path, text: Path, ctx: int, chunks: int | None, kld_base: Path | None, threads: int | None, as_json: bool) -> None:
    """Perplexity of MODEL (a .gguf via llama-perplexity, or an HF folder via torch) on a text."""
    from qconvert.ppl.measure import measure_perplexity
    from qconvert.ppl.result import PplOptions

    result = measure_perplexity(model, text, PplOptions(ctx=ctx, chunks=chunks, threads=threads), kld_base, progress=_progress())
    click.echo(json.dumps(result.to_json_dict()) if as_json else result.summary())


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
def inspect(path: Path) -> None:
    """Show a GGUF file's metadata and tensors, or an HF model folder's architecture and tensors."""
    from qconvert.inspect_model import describe

    click.echo("\n".join(describe(path)))


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("-o", "--output", "run_dir", type=click.Path(path_type=Path), default=None, help="The run folder [default: runs/RECIPE_NAME]; with Ray, one every node sees at the same path.")
@click.option("--force", "force", multiple=True, help="Rerun this stage (a name, or a kind: gguf, gptq, ...) and what depends on it; repeatable.")
@click.option("--dry-run", is_flag=True, help="Print the plan: which stages run and which are reused.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True, help="local: one stage at a time on this machine; ray: every stage a task on a Ray cluster (pip install 'qconvert[ray]').")
@click.option("--ray-address", default=None, help="The Ray cluster: auto (the one started on this machine) or HOST:PORT of its head [default: a new Ray instance on this machine].")
def run(recipe: Path, run_dir: Path | None, force: tuple[str, ...], dry_run: bool, executor: str, ray_address: str | None) -> None:
    """Run a release recipe (TOML): calibration, imatrix, GPTQ, AWQ, GGUF types, evaluation, report.

    Finished stages are kept under RUN_DIR and reused; a run cut short resumes where it stopped."""
    from qconvert.pipeline.recipe import load_recipe
    from qconvert.pipeline.report import REPORT_MD
    from qconvert.pipeline.runner import run_recipe

    if ray_address is not None and executor != "ray":
        raise QConvertError("only with --executor ray", "--ray-address")
    loaded = load_recipe(recipe)
    run_dir = run_dir or Path("runs") / recipe.stem
    run_recipe(loaded, run_dir, force, dry_run, progress=_progress(), echo=click.echo, executor=executor, ray_address=ray_address)
    if not dry_run:
        click.echo("\n" + (run_dir / REPORT_MD).read_text())
        click.echo(f"report: {run_dir / REPORT_MD}")


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print report.json.")
@click.option("--check", "gate", type=click.Path(path_type=Path), default=None, help="Check perplexity and KLD against the expected values in this gate file; exit code 1 if any moved too far.")
@click.option("--write-gate", type=click.Path(path_type=Path), default=None, help="Rewrite this gate file's expected values with this run's (its tolerances stay).")
def report(run_dir: Path, as_json: bool, gate: Path | None, write_gate: Path | None) -> None:
    """Reprint the report of a `qconvert run` folder, and check it against a regression gate."""
    from qconvert.pipeline import gate as gates
    from qconvert.pipeline.report import read_report, render_markdown

    loaded = read_report(run_dir)
    click.echo(json.dumps(loaded, indent=1) if as_json else render_markdown(loaded))
    if write_gate is not None:
        gates.write_gate(loaded, write_gate)
        click.echo(f"wrote {write_gate}")
    if gate is not None:
        lines, failed = gates.check_gate(loaded, gates.read_gate(gate))
        click.echo("\n".join(lines), err=not as_json)
        if failed:
            click.echo(f"qconvert: regression gate failed: {len(failed)} of {len(lines)} checks moved past {gate}'s tolerances", err=True)
            sys.exit(1)
