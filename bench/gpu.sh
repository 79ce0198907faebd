#!/usr/bin/env bash
# The GPU benchmark (bench/gpu.py): ~124M Llama, one GPU, bf16 + compile; prints tokens/s and MFU.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" bench/gpu.py "$@"
