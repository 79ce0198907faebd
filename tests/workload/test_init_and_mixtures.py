"""Continued pretraining and mixtures, through `llmtrain train` on real shards: a run initialised from a
transformers `LlamaForCausalLM` starts at transformers' loss (fp32, CPU, 1e-5) on one rank and sharded over
two; an export loads back into a new run with equal logits; bad starting points exit 2 naming the problem;
a two-source mixture resumes bit for bit and reports each source's validation loss and tokens."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from support.ingest import data_source, run_ingest, write_spec
from support.paths import ROOT
from support.tiny_run import tiny_run

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> tuple[Path, Path]:
    """Two datasets of different plays sharing one 512-id tokenizer (the second imports the first's)."""
    root = tmp_path_factory.mktemp("corpora")
    plays = sorted((ROOT / "examples/data/shakespeare").glob("*.txt"))
    outputs = []
    for name, chosen in (("a", plays[:4]), ("b", plays[6:9])):
        (root / name / "data").mkdir(parents=True)
        for path in chosen:
            (root / name / "data" / path.name).write_bytes(path.read_bytes())
        tokenizer = {"vocabSize": 512, **({"from": str(root / "out-a" / "tokenizer")} if name == "b" else {})}
        spec = write_spec(root / name, data_source(tokenizer=tokenizer, split={"validationFraction": 0.2}))
        result = run_ingest("-f", str(spec), "--output", str(root / f"out-{name}"))
        assert result.code == 0, result.stderr
        outputs.append(root / f"out-{name}")
    return outputs[0], outputs[1]


def hugging_face_llama(directory: Path, tokenizer_from: Path | None, vocab: int = 512, **config) -> Path:
    """A random transformers LlamaForCausalLM saved with save_pretrained (sharded: an index and six files)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    shape |= dict(num_key_value_heads=2, max_position_embeddings=128, rope_theta=50000.0, rms_norm_eps=1e-6)
    config = {"tie_word_embeddings": False, **config}
    LlamaForCausalLM(LlamaConfig(vocab_size=vocab, **shape | config)).save_pretrained(
        directory, safe_serialization=True, max_shard_size="100KB"
    )
    if tokenizer_from is not None:
        shutil.copy(tokenizer_from / "tokenizer" / "tokenizer.json", directory / "tokenizer.json")
    return directory


def run_file(tmp: Path, name: str, steps: int, model: dict | None, **spec) -> Path:
    run = tiny_run(name, "corpus", steps, 4, 1)
    run["spec"].pop("model")
    if model is not None:
        run["spec"]["model"] = model
    run["spec"].update(spec)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(run))
    return path


def train(
    spec: Path, data: list[Path], out: Path, *extra: str, ranks: int = 1, env: dict | None = None
) -> subprocess.CompletedProcess:
    args = ["-m", "llmtrain.cli", "train", "-f", str(spec), *(a for d in data for a in ("--data", str(d)))]
    args += ["--checkpoints", str(out / "checkpoints"), "--progress", str(out / "progress.json")]
    args += ["--metrics-dir", str(out / "metrics"), *extra]
    command = [sys.executable, *args] if ranks == 1 else [*TORCHRUN, f"--nproc_per_node={ranks}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def first_loss(out: Path) -> float:
    lines = [json.loads(line) for line in (out / "metrics" / "metrics.jsonl").read_text().splitlines()]
    return next(line["loss"] for line in lines if line["step"] == 1 and "loss" in line)


@pytest.mark.parametrize(("ranks", "tied"), [(1, False), (2, True)])
def test_step_zero_loss_is_transformers_loss_on_the_same_batch(tmp_path, corpora, ranks, tied):
    """fp32 on CPU within 1e-5; two ranks load their FSDP shards' rows from the safetensors files (tied
    embeddings there: the files hold no lm_head.weight)."""
    from transformers import LlamaForCausalLM

    from llmtrain.train.loader import Batches, Dataset

    data = corpora[0]
    weights = hugging_face_llama(tmp_path / "hf", data, tie_word_embeddings=tied)
    spec = run_file(tmp_path, "init", 6, {"maxSeqLen": 64}, init={"from": str(weights)})
    result = train(spec, [data], tmp_path / "run", ranks=ranks)
    assert result.returncode == 0, result.stderr[-3000:]
    dataset = Dataset.open(data)
    whole = Batches(dataset.stream("train"), dataset.stream("validation"), 64, 4 * ranks, 1, 0, 1, 0)
    (inputs, targets) = whole.step(0)[0]  # the global batch of step 0 (every rank's windows)
    reference = LlamaForCausalLM.from_pretrained(weights, local_files_only=True, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = reference(inputs).logits
    expected = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1)).item()
    assert abs(first_loss(tmp_path / "run") - expected) < 1e-5
    report = json.loads((tmp_path / "run" / "progress.json").read_text())
    assert report["initializedFrom"] == f"{weights} (Hugging Face Llama)"
    meta = json.loads((tmp_path / "run" / "checkpoints" / "step-00000006" / "meta.json").read_text())
    assert meta["model"]["rope_theta"] == 50000.0 and meta["model"]["max_seq_len"] == 64


@pytest.mark.slow  # two ranks reading their rows from S3: ~15 s
def test_two_ranks_start_from_weights_on_s3(tmp_path, corpora, s3_server):
    """From s3://: each node downloads config, index, tokenizer and the listed shards once (never the pickled
    copy beside them); the run starts exactly where the same weights on a local path start it."""
    data = corpora[0]
    weights = hugging_face_llama(tmp_path / "hf", data)
    (weights / "pytorch_model.bin").write_bytes(b"a pickle, never downloaded")
    client = s3_server.client()
    client.create_bucket(Bucket="models")
    for path in sorted(weights.iterdir()):
        client.upload_file(str(path), "models", f"llama/{path.name}")
    env = {**s3_server.env(), "LLMTRAIN_CACHE_DIR": str(tmp_path / "cache")}
    spec = run_file(tmp_path, "s3", 6, {"maxSeqLen": 64}, init={"from": "s3://models/llama"})
    result = train(spec, [data], tmp_path / "remote", ranks=2, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    local = run_file(tmp_path, "local", 6, {"maxSeqLen": 64}, init={"from": str(weights)})
    assert train(local, [data], tmp_path / "local", ranks=2).returncode == 0
    assert first_loss(tmp_path / "remote") == first_loss(tmp_path / "local")
    (copy,) = (tmp_path / "cache" / "init").iterdir()
    assert {p.name for p in copy.iterdir()} >= {"config.json", "model.safetensors.index.json", "tokenizer.json"}
    assert not (copy / "pytorch_model.bin").exists() and len(list(copy.glob("*.safetensors"))) == 6
    report = json.loads((tmp_path / "remote" / "progress.json").read_text())
    assert report["initializedFrom"] == "s3://models/llama (Hugging Face Llama)"


def test_an_export_starts_a_new_run_with_equal_logits(tmp_path, corpora):
    """Train, export to the Hugging Face layout, locate and load it as a new run would: the same logits."""
    from workload.test_export import export

    from llmtrain.export.checkpoint import load, resolve
    from llmtrain.model.llama import Llama
    from llmtrain.train import initial
    from llmtrain.train.distributed import World

    data = corpora[0]
    spec = run_file(tmp_path, "base", 8, {"layers": 2, "hiddenSize": 64, "heads": 4, "kvHeads": 2, "maxSeqLen": 64})
    assert train(spec, [data], tmp_path / "base").returncode == 0
    code, report, stderr = export(tmp_path, data, tmp_path / "base" / "checkpoints", formats=["safetensors"])
    assert code == 0, stderr[-2000:]
    hf_dir = Path(next(a["uri"] for a in report["artifacts"] if a["format"] == "safetensors"))
    world = World(0, 0, 1, torch.device("cpu"))
    origin = initial.locate(str(hf_dir), "latest", None, tmp_path / "cache", world)
    initial.check_tokenizer(origin, 512, (data / "tokenizer" / "tokenizer.json").read_bytes(), str(data))
    started = Llama(origin.config)
    initial.load(origin, started, None, world)
    trained = load(resolve(str(tmp_path / "base" / "checkpoints")), tmp_path / "cache")
    tokens = torch.randint(0, 512, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(started(tokens), trained(tokens))


def test_a_run_continues_from_its_own_checkpoint_with_the_optimizer_moments(tmp_path, corpora):
    data = corpora[0]
    shape = {"layers": 2, "hiddenSize": 64, "heads": 4, "kvHeads": 2, "maxSeqLen": 64}
    assert train(run_file(tmp_path, "base", 8, shape), [data], tmp_path / "base").returncode == 0
    source = tmp_path / "base" / "checkpoints"
    spec = run_file(tmp_path, "more", 8, None, init={"from": str(source), "optimizerState": True})
    result = train(spec, [data], tmp_path / "more", "--init", str(source), "--init-select", "latest")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "more" / "progress.json").read_text())
    assert report["initializedFrom"] == f"{source}/step-00000008 (llmtrain checkpoint, step 8)"
    assert report["step"] == 8  # the step counter starts at 0: a new run of 8 steps
    base_loss = json.loads((tmp_path / "base" / "progress.json").read_text())["loss"]
    assert first_loss(tmp_path / "more") < base_loss + 0.5  # continues where the base run stood, not from random


def bad_start(tmp_path: Path, data: Path, weights: Path, model: dict | None = None) -> subprocess.CompletedProcess:
    spec = run_file(tmp_path, "bad", 6, model or {"maxSeqLen": 64}, init={"from": str(weights)})
    return train(spec, [data], tmp_path / "bad", "--init", str(weights))


def test_bad_starting_points_exit_2_naming_the_problem(tmp_path, corpora):
    """The three the issue names through the CLI (exit 2); two more refusals in process."""
    from llmtrain.model.llama import Llama
    from llmtrain.model.shape import ShapeMismatch
    from llmtrain.train import initial
    from llmtrain.train.distributed import World

    data = corpora[0]
    weights = hugging_face_llama(tmp_path / "hf", data)
    result = bad_start(tmp_path, data, weights, {"layers": 3, "maxSeqLen": 64})
    assert result.returncode == 2 and "spec.model.layers is 3, but the weights in" in result.stderr
    wide = hugging_face_llama(tmp_path / "hf-600", None, vocab=600)
    result = bad_start(tmp_path, data, wide)
    assert result.returncode == 2 and "vocabulary of 600 ids, the dataset's tokenizer" in result.stderr
    assert "512" in result.stderr
    other = hugging_face_llama(tmp_path / "hf-other", corpora[0])
    other_tokenizer = json.loads((other / "tokenizer.json").read_text())
    vocab = other_tokenizer["model"]["vocab"]
    vocab["e"], vocab["t"] = vocab["t"], vocab["e"]  # the same size, two ids swapped
    (other / "tokenizer.json").write_text(json.dumps(other_tokenizer))
    world = World(0, 0, 1, torch.device("cpu"))
    origin = initial.locate(str(other), "latest", None, tmp_path / "cache", world)
    ours = (data / "tokenizer" / "tokenizer.json").read_bytes()
    with pytest.raises(initial.InitError, match="encode the probe text differently"):
        initial.check_tokenizer(origin, 512, ours, str(data))
    shard = sorted(weights.glob("model-*.safetensors"))[-1]
    shard.write_bytes(shard.read_bytes()[:-100])
    result = bad_start(tmp_path, data, weights)
    assert result.returncode == 2 and f"{shard.name}: truncated" in result.stderr, result.stderr[-2000:]
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(weights / "config.json", pickled / "config.json")
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    origin = initial.locate(str(pickled), "latest", None, tmp_path / "cache", world)
    with pytest.raises(ShapeMismatch, match="pickled weights: loading it would run code"):
        initial.load(origin, Llama(origin.config), None, world)


def mixture_file(tmp_path: Path, steps: int) -> Path:
    data = [{"dataSourceRef": {"name": "plays-a"}, "weight": 3}, {"dataSourceRef": {"name": "plays-b"}, "weight": 1}]
    shape = {"layers": 2, "hiddenSize": 64, "heads": 4, "kvHeads": 2, "maxSeqLen": 64}
    run = tiny_run("mix", "unused", steps, 4, 1)
    run["spec"].pop("dataSourceRef")
    run["spec"].update(data=data, model=shape)
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump(run))
    return path


def test_a_mixture_resumes_bit_exact_and_reports_each_source(tmp_path, corpora):
    spec = mixture_file(tmp_path, 16)
    assert train(spec, list(corpora), tmp_path / "straight").returncode == 0
    assert train(spec, list(corpora), tmp_path / "halves", "--stop-at-step", "8").returncode == 0
    assert train(spec, list(corpora), tmp_path / "halves").returncode == 0
    from llmtrain.export.checkpoint import load, resolve

    straight = load(resolve(str(tmp_path / "straight" / "checkpoints")), tmp_path / "c1").state_dict()
    resumed = load(resolve(str(tmp_path / "halves" / "checkpoints")), tmp_path / "c2").state_dict()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    report = json.loads((tmp_path / "halves" / "progress.json").read_text())
    sources = {s["name"]: s for s in report["sources"]}
    assert set(sources) == {"plays-a", "plays-b"} and sources["plays-a"]["weight"] == 0.75
    assert sources["plays-a"]["tokensSeen"] + sources["plays-b"]["tokensSeen"] == report["tokensSeen"]
    assert sources["plays-a"]["tokensSeen"] == 3 * sources["plays-b"]["tokensSeen"]  # 48 and 16 windows of 64
    losses = [sources[n]["valLoss"] for n in ("plays-a", "plays-b")]
    assert report["valLoss"] == pytest.approx(0.75 * losses[0] + 0.25 * losses[1])
    logged = json.loads((tmp_path / "halves" / "metrics" / "metrics.jsonl").read_text().splitlines()[-1])
    assert logged["step"] == 16 and {n: f["tokensSeen"] for n, f in logged["sources"].items()} == {
        n: sources[n]["tokensSeen"] for n in sources
    }
    meta = json.loads((tmp_path / "halves" / "checkpoints" / "step-00000016" / "meta.json").read_text())
    assert meta["tokensBySource"] == {n: sources[n]["tokensSeen"] for n in sources}


def test_a_mixture_of_different_tokenizers_is_refused(tmp_path, corpora):
    other = tmp_path / "other"
    shutil.copytree(corpora[1], other)
    tokenizer = json.loads((other / "tokenizer" / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["e"], vocab["t"] = vocab["t"], vocab["e"]  # the same size, two ids swapped
    (other / "tokenizer" / "tokenizer.json").write_text(json.dumps(tokenizer))
    result = train(mixture_file(tmp_path, 8), [corpora[0], other], tmp_path / "run")
    assert result.returncode == 2
    assert "the tokenizers of DataSource plays-a" in result.stderr and "and plays-b" in result.stderr
