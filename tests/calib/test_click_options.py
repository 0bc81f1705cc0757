"""The shared click options: a later stage (gptq, awq, imatrix) takes a calibration file or --source."""

import click
import torch
from click.testing import CliRunner

from qconvert.calib.build import build_calibration, resolve_calibration
from qconvert.calib.store import write_calibration
from qconvert.calib.types import CalibInput, SampleMode, SamplingOptions, SourceSpec
from qconvert.cli_options import calibration_options
from qconvert.errors import QConvertError
from tests.calib.conftest import CHAT_SAMPLE, EMMA


def _stage(tokenizer, seen: list):
    """A stand-in for a quantization command: it resolves its calibration input and keeps it."""

    @click.command()
    @calibration_options
    @click.option("--bits", type=int, default=4)
    def stage(calib_input: CalibInput, bits: int) -> None:
        seen.append(resolve_calibration(tokenizer, calib_input))

    return stage


def test_sources_given_to_a_stage_build_the_same_set_as_the_api(tokenizer):
    seen = []
    args = ["--source", str(EMMA), "--source", str(CHAT_SAMPLE), "--n-samples", "8", "--seqlen", "64", "--mode", "samples", "--seed", "4"]
    result = CliRunner().invoke(_stage(tokenizer, seen), args)
    assert result.exit_code == 0, result.output
    options = SamplingOptions(n_samples=8, seqlen=64, mode=SampleMode.SAMPLES, seed=4)
    direct = build_calibration(tokenizer, [SourceSpec(EMMA), SourceSpec(CHAT_SAMPLE)], options)
    assert torch.equal(seen[0].input_ids, direct.input_ids) and seen[0].manifest == direct.manifest


def test_a_calibration_file_given_to_a_stage_is_loaded(tokenizer, tmp_path):
    calib = build_calibration(tokenizer, [SourceSpec(EMMA)], SamplingOptions(n_samples=4, seqlen=32))
    path = write_calibration(calib, tmp_path / "c.safetensors")
    seen = []
    result = CliRunner().invoke(_stage(tokenizer, seen), ["--calib", str(path), "--bits", "3"])
    assert result.exit_code == 0, result.output
    assert torch.equal(seen[0].input_ids, calib.input_ids)


def test_a_file_and_sources_together_are_refused(tokenizer, tmp_path):
    result = CliRunner().invoke(_stage(tokenizer, []), ["--calib", str(tmp_path / "c.safetensors"), "--source", str(EMMA), "--seqlen", "64"])
    assert isinstance(result.exception, QConvertError)
    assert "--seqlen, --source build a calibration set; --calib gives a ready one" in str(result.exception)


def test_an_unknown_format_or_mode_is_refused(tokenizer):
    for args, message in ((["--format", "xml"], "unknown format 'xml'"), (["--mode", "random"], "unknown mode 'random'")):
        result = CliRunner().invoke(_stage(tokenizer, []), args)
        assert isinstance(result.exception, QConvertError) and message in str(result.exception)
