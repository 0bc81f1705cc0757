"""Safe output files: written under a temporary name beside the target and renamed when complete.

An existing output is refused unless `force` is set; on any failure or Ctrl-C the temporary file is
removed, so a run never leaves a partial output behind.
"""

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from qconvert.errors import QConvertError


def check_output_path(path: Path, force: bool, folder: bool = False) -> None:
    """Fail early, before any work, if the output file (or `folder`) `path` cannot or may not be written."""
    if path.exists() and not force:
        raise QConvertError("output already exists", path, "pass --force to overwrite it")
    if path.exists() and path.is_dir() != folder:
        raise QConvertError(f"output is {'not ' if folder else ''}a directory", path, f"give a {'folder' if folder else 'file'} name")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise QConvertError("output directory does not exist", parent, "create it first")
    if not os.access(parent, os.W_OK):
        raise QConvertError("output directory is not writable", parent, "choose another output path")


# Write errors that mean the disk (or a quota, or a file-size limit) is full: the error says so.
_NO_SPACE = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded", errno.EFBIG: "file too large (a file-size limit or the filesystem's)"}


def _disk_full(exc: OSError, path: Path) -> bool:
    """A short write with no errno (numpy's tofile: "N requested and M written") on a filesystem
    with (almost) nothing free is a full disk too."""
    if exc.errno is not None or "written" not in str(exc):
        return False
    try:
        return shutil.disk_usage(path.absolute().parent).free < 1 << 20
    except OSError:
        return False


def write_error(exc: OSError, path: Path) -> QConvertError:
    """The one-line error for an OSError met while writing the output `path` (its partial files are removed)."""
    if _disk_full(exc, path):
        return QConvertError(f"cannot write output: no space left on the device ({exc}); nothing was kept", path, "free disk space or write the output elsewhere, then run again")
    if exc.errno in _NO_SPACE:
        return QConvertError(f"cannot write output: {_NO_SPACE[exc.errno]}; nothing was kept", path, "free disk space or write the output elsewhere, then run again")
    return QConvertError(f"cannot write output: {exc.strerror or exc}", path, "check the path and free disk space")


@contextmanager
def spilling_beside(path: Path) -> Iterator[None]:
    """Work that spills temporary files into the output's folder before the output is written (the
    solved tensors of `gguf --gptq`): a full disk there is the output's write error."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _NO_SPACE or _disk_full(exc, path):
            raise write_error(exc, path) from exc
        raise


@contextmanager
def atomic_output(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; it becomes `path` only if the block completes."""
    path = Path(path)
    check_output_path(path, force)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(exc, path) from exc
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_output_dir(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder to fill; it replaces `path` only if the block completes."""
    path = Path(path)
    check_output_path(path, force, folder=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    old = path.with_name(f".{path.name}.{os.getpid()}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        yield tmp
        if path.exists():  # --force: move the old output aside first, so a failed rename loses nothing
            os.replace(path, old)
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(exc, path) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
