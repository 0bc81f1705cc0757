"""Run llama.cpp's own convert_hf_to_gguf.py, from the llama-cpp-python sdist that
`make llama-cpp` unpacked, as a reference for tests and benchmarks.

    python scripts/reference_convert.py MODEL_DIR --outtype f16 --outfile OUT.gguf

The one change: convert_hf_to_gguf.py recognises BPE pre-tokenizers by hashing their output on
a test string, and our bundled test tokenizers are not among the public models it knows; an
unknown hash is therefore taken as $QCONVERT_REF_PRE (default "qwen2", whose split regex they
use) instead of an error. QCONVERT_REF_PRE=none keeps the error, for tokenizers it should know.

With $QCONVERT_REF_CHKHSH set to a file path, the hash convert_hf_to_gguf.py computed (its
`chkhsh`) is written there, so tests can check qconvert's against it. Everything else runs as
shipped.
"""

import os
import runpy
import sys
from pathlib import Path

from qconvert.llama_cpp import llama_cpp_source


def main() -> None:
    src = llama_cpp_source()
    sys.path[:0] = [str(src / "gguf-py"), str(src)]  # its own gguf-py, not the installed gguf
    import conversion.base as base

    recognise = base.TextModel.get_vocab_base_pre
    fallback = os.environ.get("QCONVERT_REF_PRE", "qwen2")

    def recognise_or_default(self, tokenizer) -> str:
        try:
            return recognise(self, tokenizer)
        except NotImplementedError:
            if fallback == "none":
                raise
            return fallback

    base.TextModel.get_vocab_base_pre = recognise_or_default

    if record := os.environ.get("QCONVERT_REF_CHKHSH"):
        real_sha256 = base.sha256  # get_vocab_base_pre's only use of it: sha256(str(chktok).encode())

        def recording_sha256(data: bytes = b""):
            digest = real_sha256(data)
            Path(record).write_text(digest.hexdigest(), encoding="utf-8")
            return digest

        base.sha256 = recording_sha256

    script = src / "convert_hf_to_gguf.py"
    sys.argv = [str(script), *sys.argv[1:]]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
