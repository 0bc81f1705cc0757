#!/usr/bin/env bash
# Creates the two peer GPTQ venvs used by the GPTQ benchmark, CPU only, in the repo root:
#   .venv-gptqmodel      GPTQModel 7.7.0 (+ optimum, so plain transformers can load GPTQ checkpoints)
#   .venv-llmcompressor  llm-compressor 0.14.0.1
# Each gets the CPU torch==2.13.0 first (a bare `torch` requirement would pull a CUDA build).
# gptqmodel 7.7.0 declares torch>=2.14.1 but runs on 2.13.0 (its code checks only >= 2.8/2.10),
# so it is installed with --no-deps and its own requirements, less torch, are installed beside
# torch==2.13.0. Its JIT CPU extensions are then built once (~30 s and ~100 s on 2 cores, cached
# in ~/.cache/gptqmodel) so that no later timing includes a compile.
# Idempotent: a stamp file in each venv records what was installed; a second run does nothing.
# Does not touch the main .venv. About 5 minutes on 2 cores from the local package mirror.
# Usage: bash scripts/peers/setup_peers.sh  (PYTHON=... picks the interpreter, default python3)
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
TORCH=torch==2.13.0
GPTQMODEL=gptqmodel==7.7.0
GPTQMODEL_PINS="transformers==5.24.0 optimum==2.3.0 accelerate==1.15.0 torchao==0.18.0"
LLMC="llmcompressor==0.14.0.1 compressed-tensors==0.19.0 transformers==5.17.0"

# (Commands inside an `if` condition ignore `set -e`, so the installs stay outside it.)
# needs_install DIR STAMP_TEXT: true unless DIR's stamp says STAMP_TEXT; then recreates DIR empty.
needs_install() {
    if [ -f "$1/.peer-installed" ] && [ "$(cat "$1/.peer-installed")" = "$2" ]; then
        echo "$1: up to date ($2)"; return 1
    fi
    rm -rf "$1"
}

stamp="$TORCH $GPTQMODEL $GPTQMODEL_PINS"
if needs_install .venv-gptqmodel "$stamp"; then
    "$PYTHON" -m venv .venv-gptqmodel
    pip=.venv-gptqmodel/bin/pip
    $pip install --quiet "$TORCH"
    $pip install --quiet --no-deps "$GPTQMODEL"
    # gptqmodel's own requirements (no extras), less its torch pin.
    .venv-gptqmodel/bin/python -c '
import importlib.metadata as m
for r in m.requires("gptqmodel"):
    if "extra ==" not in r and not r.startswith("torch>"):
        print(r)' > .venv-gptqmodel/gptqmodel-requirements.txt
    # pip then prints "ERROR: ... gptqmodel 7.7.0 requires torch>=2.14.1": expected, exit code 0.
    $pip install --quiet "$TORCH" $GPTQMODEL_PINS -r .venv-gptqmodel/gptqmodel-requirements.txt
    .venv-gptqmodel/bin/python -c '
from gptqmodel import extension
from gptqmodel.utils.cpu_features import has_avx512_bf16
names = ["pack_block_cpu"] + (["int4_qzero_group_scaled_cpu"] if has_avx512_bf16() else [])
for name in names:
    extension.load(name=name)
print("gptqmodel CPU extensions built:", ", ".join(names))' 2>&1 | tail -1
    echo "$stamp" > .venv-gptqmodel/.peer-installed
fi

stamp="$TORCH $LLMC"
if needs_install .venv-llmcompressor "$stamp"; then
    "$PYTHON" -m venv .venv-llmcompressor
    .venv-llmcompressor/bin/pip install --quiet "$TORCH"
    .venv-llmcompressor/bin/pip install --quiet "$TORCH" $LLMC
    echo "$stamp" > .venv-llmcompressor/.peer-installed
fi
