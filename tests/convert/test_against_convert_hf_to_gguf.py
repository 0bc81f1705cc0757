"""Our HF → GGUF conversion against llama.cpp's own convert_hf_to_gguf.py (from the bundled sdist):
the same tensors with the same data bytes, and the same metadata."""

import subprocess
import sys

import pytest

from tests.conftest import FIXTURE, ROOT, convert
from tests.quant.gguf_compare import differences, metadata_differences
from tests.variants import resave_as_llama

# Keys convert_hf_to_gguf.py derives differently from us on purpose: it prettifies the folder name
# ("tiny-qwen2" → "Tiny Qwen2") and guesses a parameter-count label.
COSMETIC_KEYS = {"general.name", "general.size_label"}


def reference_convert(model_dir, out):
    cmd = [sys.executable, str(ROOT / "scripts" / "reference_convert.py"), str(model_dir), "--outtype", "f16", "--outfile", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=out.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.parametrize("variant", ["qwen2", "llama", "llama-tied"])
def test_same_tensors_and_metadata_as_convert_hf_to_gguf(llama_tools, tmp_path, variant):
    model_dir = FIXTURE if variant == "qwen2" else resave_as_llama(tmp_path / variant, tied=variant == "llama-tied")
    ours = convert(model_dir, tmp_path / "ours.gguf")
    theirs = reference_convert(model_dir, tmp_path / "theirs.gguf")
    assert differences(ours, theirs) == []
    assert metadata_differences(ours, theirs, ignore=COSMETIC_KEYS) == []
