"""Finding and running the llama.cpp tools qconvert drives (llama-perplexity, llama-quantize, ...).

They come from `make llama-cpp`, which builds them from the llama-cpp-python sdist into a cache
keyed by version, or from a user's own build named by QCONVERT_LLAMA_CPP (a folder holding the
binaries, or its bin/ subfolder).
"""

import os
import subprocess
from pathlib import Path

from qconvert.errors import QConvertError

LLAMA_CPP_PYTHON_VERSION = "0.3.36"  # keep both in step with scripts/build_llama_cpp.sh
BUILD_RECIPE = "r2"
ENV_VAR = "QCONVERT_LLAMA_CPP"


def _cache_root() -> Path:
    return Path(os.environ.get("QCONVERT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qconvert")


def cache_dir() -> Path:
    return _cache_root() / f"llama.cpp-{LLAMA_CPP_PYTHON_VERSION}-{BUILD_RECIPE}" / "bin"


def llama_cpp_source() -> Path:
    """The llama.cpp source tree unpacked by `make llama-cpp` (for its convert_hf_to_gguf.py)."""
    src = _cache_root() / f"build-{LLAMA_CPP_PYTHON_VERSION}" / "src" / "vendor" / "llama.cpp"
    if not (src / "convert_hf_to_gguf.py").is_file():
        raise QConvertError("llama.cpp source not found", src, "run `make llama-cpp`")
    return src


def find_tool(name: str) -> Path:
    """Path of the llama.cpp binary `name`, or a QConvertError naming how to build it."""
    user = os.environ.get(ENV_VAR)
    candidates = [Path(user), Path(user) / "bin"] if user else [cache_dir()]
    for folder in candidates:
        if (folder / name).is_file() and os.access(folder / name, os.X_OK):
            return folder / name
    where = f"{ENV_VAR}={user}" if user else str(candidates[0])
    raise QConvertError(f"llama.cpp tool {name} not found", where, "build it with `make llama-cpp`, or point QCONVERT_LLAMA_CPP at your llama.cpp build")


def run_tool(name: str, args: list[str], timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run a llama.cpp tool; stdout and stderr are captured as text. A failure raises a QConvertError
    carrying the tool's last error line."""
    exe = find_tool(name)
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, errors="replace", timeout=timeout)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        last = next((ln for ln in reversed(lines) if "error" in ln.lower() or "failed" in ln.lower()), lines[-1] if lines else "")
        raise QConvertError(f"{name} failed (exit {proc.returncode}): {last.strip()}", args[0] if args else name)
    return proc
