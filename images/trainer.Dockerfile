# The llmtrain workloads: one image runs `llmtrain ingest`, `llmtrain launch -- <torchrun args>` (train)
# and `llmtrain export`. CUDA runtime + torch (its CUDA wheel) + the workload package + llama-cpp-python
# (the GGUF export loads what it wrote in llama.cpp), built for the same portable AVX2 baseline as
# `make llama-cpp` (a -march=native build segfaults on AMX CPUs; a test keeps the two in step).
#   docker build -f images/trainer.Dockerfile -t ghcr.io/llmtrain/trainer:0.1.0 .
# CPU only (kind, CI clusters; what `make images` builds by default):
#   --build-arg CUDA_IMAGE=ubuntu:22.04 --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

FROM ${CUDA_IMAGE} AS build
ARG PYTHON=python3.11
# torch's own index for other builds of the pinned version (https://download.pytorch.org/whl/cpu for kind)
ARG TORCH_INDEX_URL=
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get install -y --no-install-recommends ${PYTHON} ${PYTHON}-venv ${PYTHON}-dev build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY trainer/ trainer/
COPY operator/ operator/
RUN ${PYTHON} -m venv /opt/llmtrain \
 && /opt/llmtrain/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/llmtrain/bin/pip install --no-cache-dir ${TORCH_INDEX_URL:+--extra-index-url ${TORCH_INDEX_URL}} \
    -c constraints.txt ".[train]" \
 && CMAKE_BUILD_PARALLEL_LEVEL=4 \
    CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" \
    /opt/llmtrain/bin/pip install --no-cache-dir -c constraints.txt llama-cpp-python==0.3.36

FROM ${CUDA_IMAGE}
ARG PYTHON=python3.11
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get install -y --no-install-recommends ${PYTHON} libgomp1 \
 && apt-get purge -y software-properties-common && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1000 llmtrain && useradd --uid 1000 --gid 1000 --no-create-home --shell /usr/sbin/nologin llmtrain
COPY --from=build /opt/llmtrain /opt/llmtrain
ENV PATH=/opt/llmtrain/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/scratch \
    TMPDIR=/scratch/tmp
USER 1000:1000
ENTRYPOINT ["llmtrain"]
