#!/usr/bin/env bash
# Build the llama.cpp tools qconvert drives (perplexity, quantize, imatrix, cli, tokenize) from the
# llama.cpp source that the llama-cpp-python sdist carries under vendor/llama.cpp.
# The build is cached per version: a second run with the tools present does nothing.
set -euo pipefail

version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
recipe=r2  # bump when the build below changes, so cached tools are rebuilt (keep in step with qconvert/llama_cpp.py)
cache="${QCONVERT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qconvert}"
prefix="$cache/llama.cpp-$version-$recipe"
tools=(llama-perplexity llama-quantize llama-imatrix llama-cli llama-tokenize)
python="${PYTHON:-python3}"

have_all=1
for t in "${tools[@]}"; do [ -x "$prefix/bin/$t" ] || have_all=0; done
if [ "$have_all" = 1 ]; then
    echo "llama.cpp tools (llama-cpp-python $version) cached in $prefix/bin"
    exit 0
fi

work="$cache/build-$version"
mkdir -p "$work"
if [ ! -d "$work/src/vendor/llama.cpp" ]; then
    echo "fetching the llama-cpp-python $version sdist ..."
    "$python" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$work/dl"
    rm -rf "$work/src" && mkdir -p "$work/src"
    tar xzf "$work"/dl/llama_cpp_python-"$version".tar.gz -C "$work/src" --strip-components=1
fi

# llama.cpp's logger is asynchronous and deliberately never destroyed (its issue #22142), so a tool
# that returns from main without flushing can lose its last lines -- perplexity's "Final estimate"
# among them, about half the time on 2 cores. Flush before exit, once per source tree.
for tool in perplexity imatrix; do
    src="$work/src/vendor/llama.cpp/tools/$tool/$tool.cpp"
    grep -q "qconvert: flush" "$src" || sed -i \
        's|^    llama_backend_free();$|    llama_backend_free();\n    common_log_flush(common_log_main()); // qconvert: flush the async log before exit|' "$src"
done

# -march=native, less AMX: on CPUs with AMX (Sapphire Rapids and later) ggml's AMX path crashes
# every quantized model with SIGSEGV on this project's machines (f16 runs fine), while torch's
# oneDNN uses the same units without trouble. The rest of the native ISA (AVX512, VNNI) stays.
no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
echo "building ${tools[*]} with cmake (takes ~10 minutes on 2 cores, once) ..."
rm -rf "$work/build"  # a cached configure would keep the old flags
cmake -S "$work/src/vendor/llama.cpp" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_FLAGS="$no_amx" -DCMAKE_CXX_FLAGS="$no_amx" \
    -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF > "$work/cmake-configure.log"
cmake --build "$work/build" -j "$(nproc)" --target "${tools[@]}" > "$work/cmake-build.log" 2>&1 \
    || { tail -30 "$work/cmake-build.log"; exit 1; }

mkdir -p "$prefix/bin.tmp"
for t in "${tools[@]}"; do cp "$work/build/bin/$t" "$prefix/bin.tmp/"; done
rm -rf "$prefix/bin" && mv "$prefix/bin.tmp" "$prefix/bin"
echo "llama.cpp tools installed in $prefix/bin"
