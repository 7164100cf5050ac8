#!/usr/bin/env bash
# Makes target/bench-venv with torch and transformers from PyPI (CPU execution; the Linux wheel
# also carries CUDA libraries, about 2.7 GB) for the PyTorch baselines of `atomskill bench model`
# and `atomskill bench train`, and prints its python. Reuses the venv when it already works.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="$PWD/target/bench-venv"
if ! "$venv/bin/python" -c 'import torch, transformers' 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check torch transformers safetensors >&2
fi
echo "$venv/bin/python"
