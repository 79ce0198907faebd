#!/usr/bin/env bash
# The GPU benchmark's one command (bench/gpu.py; torchtitan's side in bench/gpu_torchtitan.py).
#
#   bash bench/gpu.sh wheels          where PyPI is reachable: download the wheels the GPU machine's image
#                                     lacks (Python 3.12, x86-64) into bench/.cache/gpu-wheels (git-ignored,
#                                     ~30 MB): llmtrain's light dependencies, torchtitan and its dependencies
#   bash bench/gpu.sh [gpu.py args]   on the GPU machine (no network; the working tree and that folder carried):
#                                     install those wheels into /tmp/gpu-site, skipping each distribution the
#                                     image already has, then run bench/gpu.py with --out "$OUT" (if set).
#                                     torchtitan 0.3.0 needs a torch newer than 2.11 (DataParallelMeshDims);
#                                     on an older torch (the H200 image had 2.11) 0.2.2 is installed instead
#
# The image's own python3, torch, numpy, etc. are used as they are: the project pins torch 2.13 on CPUs, but a
# CUDA build of torch is far over what a run can carry.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
WHEELS=bench/.cache/gpu-wheels
SITE="${GPU_SITE:-/tmp/gpu-site}"

# what `llmtrain train` imports that the image has not (the versions the project's CPU environment runs)
LLMTRAIN=(
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 cel-python==0.5.0
  google-re2==1.1.20251105 jmespath==1.1.0 lark==1.3.1 pendulum==3.3.0 tzdata==2026.6 boto3==1.44.8
  botocore==1.44.8 s3transfer==0.19.3 zstandard==0.25.0
)
# torchtitan 0.3.0 and what it (or 0.2.2) imports that the image has not; datasets < 4.8 is 0.3.0's bound,
# and dill / multiprocess are the versions datasets 4.7 accepts
TORCHTITAN=(
  torchtitan==0.3.0 torchdata==0.11.0 torch-checkpointing==0.1.1 spmd-types==0.2.3 tyro==1.0.17
  docstring-parser==0.18.0 typeguard==4.6.1 datasets==4.7.0 dill==0.4.0 multiprocess==0.70.18
)
TORCHTITAN_FOR_TORCH_2_11=torchtitan==0.2.2

if [[ "${1:-}" == wheels ]]; then
  mkdir -p "$WHEELS"
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$WHEELS" "${LLMTRAIN[@]}" "${TORCHTITAN[@]}"
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d "$WHEELS" "$TORCHTITAN_FOR_TORCH_2_11"
  du -sh "$WHEELS"
  exit 0
fi

if [[ -d "$WHEELS" ]]; then
  # only the distributions the image lacks (a carried copy of one it has would shadow it), and the torchtitan
  # this torch can import
  mapfile -t missing < <("$PYTHON" - "$WHEELS" <<'EOF'
import importlib.metadata, pathlib, sys

try:
    from torch.distributed.fsdp import DataParallelMeshDims  # noqa: F401 (torchtitan 0.3 imports it)
    unusable = "torchtitan-0.2."
except ImportError:
    unusable = "torchtitan-0.3."
for wheel in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    if wheel.name.startswith(unusable):
        continue
    try:
        importlib.metadata.version(wheel.name.split("-")[0])
    except importlib.metadata.PackageNotFoundError:
        print(wheel)
EOF
  )
  if ((${#missing[@]})); then
    "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      "${missing[@]}"
  fi
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "no $WHEELS: run 'bash bench/gpu.sh wheels' where PyPI is reachable and carry it (else only what the" \
    "image has is importable)" >&2
fi
export PYTHONPATH="$PWD/trainer${PYTHONPATH:+:$PYTHONPATH}"
# fail in seconds, not after minutes of GPU time, when a dependency of `llmtrain train` is missing
"$PYTHON" -c "import llmtrain.cli, llmtrain.train.loop" || {
  echo "llmtrain does not import with this Python: add the missing distribution to LLMTRAIN in $0" >&2
  exit 3
}
exec "$PYTHON" bench/gpu.py ${OUT:+--out "$OUT"} "$@"
