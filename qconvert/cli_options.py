"""Options that several commands share: the calibration options, as click decorators that every
calibrating command uses.

`source_options` adds --source/--format/--field/--split and the sampling options, and hands the
command one `calib_request: CalibRequest`. `calibration_options` (for gptq, awq, imatrix, ...) adds
--calib FILE as well and hands over `calib_input: CalibInput`: either a calibration file or a set to
build, never both. Pass it to `qconvert.calib.build.resolve_calibration(tokenizer, calib_input)`.
Imports nothing heavy: commands are decorated when the CLI module loads.
"""

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from qconvert.calib.types import CalibInput, CalibRequest, SamplingOptions, SourceSpec, parse_format, parse_mode
from qconvert.errors import QConvertError

_DEFAULTS = SamplingOptions()
_SAMPLING_NAMES = ("n_samples", "seqlen", "mode", "min_tokens", "seed")

# Defaults are None so that a set built from a --calib file can tell given options from defaults.
_OPTIONS = (
    click.option("--source", "sources", multiple=True, type=click.Path(path_type=Path), help="Calibration text: a file or folder; repeatable. None: the bundled default set (calibration/)."),
    click.option("--format", "source_format", default="auto", show_default=True, help="Source format: auto, text, jsonl, chat, parquet, json, arrow, dataset."),
    click.option("--field", default=None, help="Record field or column with the text (default text) or the chat messages (default messages)."),
    click.option("--split", default=None, help="Split of a dataset folder (default: train, or its only split)."),
    click.option("--n-samples", type=int, default=None, help=f"Samples in the set [default: {_DEFAULTS.n_samples}]."),
    click.option("--seqlen", type=int, default=None, help=f"Tokens per sample [default: {_DEFAULTS.seqlen}]."),
    click.option("--mode", default=None, help=f"concat: join documents and cut windows; samples: one document per sample [default: {_DEFAULTS.mode.value}]."),
    click.option("--min-tokens", type=int, default=None, help="Drop documents with fewer tokens [default: none dropped]."),
    click.option("--seed", type=int, default=None, help=f"Seed of the sampling [default: {_DEFAULTS.seed}]."),
)


def _request(kwargs: dict[str, Any]) -> CalibRequest:
    fmt = parse_format(kwargs.pop("source_format"))
    field, split = kwargs.pop("field"), kwargs.pop("split")
    sources = tuple(SourceSpec(Path(p), fmt, field, split) for p in kwargs.pop("sources"))
    given = {name: kwargs.pop(name) for name in _SAMPLING_NAMES}
    if given["mode"] is not None:
        given["mode"] = parse_mode(given["mode"])
    options = SamplingOptions(**{k: v for k, v in given.items() if v is not None})
    return CalibRequest(sources, options)


def _given(kwargs: dict[str, Any]) -> list[str]:
    """The building options given on the command line."""
    flags = [f"--{n.replace('_', '-')}" for n in _SAMPLING_NAMES if kwargs.get(n) is not None]
    flags += ["--source"] if kwargs.get("sources") else []
    flags += [f"--{n}" for n in ("field", "split") if kwargs.get(n) is not None]
    return flags + (["--format"] if kwargs.get("source_format", "auto") != "auto" else [])


def _add_options(f: Callable, options: tuple) -> Callable:
    for option in reversed(options):
        f = option(f)
    return f


def source_options(f: Callable) -> Callable:
    """Adds the source and sampling options; the command gets `calib_request: CalibRequest`."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["calib_request"] = _request(kwargs)
        return f(*args, **kwargs)

    return _add_options(wrapper, _OPTIONS)


def _calib_input(kwargs: dict[str, Any]) -> CalibInput:
    """Pops the calibration options from a command's arguments: a file, or a set to build."""
    calib_file = kwargs.pop("calib_file")
    if calib_file is not None:
        given = _given(kwargs)
        if given:
            raise QConvertError(f"{', '.join(given)} build a calibration set; --calib gives a ready one", "--calib", "give one or the other")
    return CalibInput(calib_file, _request(kwargs))


_CALIB_FILE = click.option("--calib", "calib_file", type=click.Path(path_type=Path), default=None, help="A calibration file from `qconvert calib` (instead of --source ...).")


def calibration_options(f: Callable) -> Callable:
    """Adds --calib FILE and the source options; the command gets `calib_input: CalibInput`."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["calib_input"] = _calib_input(kwargs)
        return f(*args, **kwargs)

    return _add_options(wrapper, (_CALIB_FILE, *_OPTIONS))


def optional_calibration_options(f: Callable) -> Callable:
    """The same options for a command that calibrates only when asked (gguf's in-line importance
    matrix): `calib_input` is None unless --calib or one of the set-building options is given."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        asked = kwargs["calib_file"] is not None or bool(_given(kwargs))
        calib_input = _calib_input(kwargs)
        kwargs["calib_input"] = calib_input if asked else None
        return f(*args, **kwargs)

    return _add_options(wrapper, (_CALIB_FILE, *_OPTIONS))
