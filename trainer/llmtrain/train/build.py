"""Building what a training process trains: the checked dataset, the model's shape, the (sharded) model."""

from __future__ import annotations

from pathlib import Path

import torch

from .. import storage
from ..api.trainingrun import TrainingRun, TrainingSpec
from ..model.llama import Llama, LlamaConfig
from . import distributed
from .distributed import World
from .loader import Batches, DataError, Dataset
from .precision import Precision
from .remote_data import RemoteDataset
from .shard_cache import BlockCache, budget_from_env


def open_dataset(uri: str, cache: Path, world: World) -> Dataset:
    """The dataset, its shards checked against manifest.json: a local or `pvc://` one memory-mapped in
    place, an `s3://` one read in blocks through the node's shared cache under `cache/shards`."""
    if storage.is_s3(uri):
        blocks = BlockCache(cache / "shards", budget_from_env(), stats_name=f"rank-{world.rank}")
        dataset: Dataset = RemoteDataset.open_remote(uri, blocks)
    else:
        dataset = Dataset.open(storage.local_path(uri))
    _verify_shards(dataset, world)
    dataset.check_token_range()
    return dataset


def _verify_shards(dataset: Dataset, world: World) -> None:
    """Each rank hashes its share of the shards; a mismatch anywhere stops every rank (exit 2)."""
    problem = None
    try:
        dataset.verify_shards(world.rank, world.size)
    except DataError as exc:
        problem = exc
    if not distributed.all_true(problem is None, world):
        raise problem or DataError(
            f"{dataset.location}: a dataset shard does not match manifest.json (another rank's log)"
        )


def model_config(run: TrainingRun, dataset: Dataset) -> LlamaConfig:
    config = LlamaConfig.from_spec(run.spec.model, dataset.vocab_size)
    if dataset.manifest["dtype"] not in ("uint16", "uint32"):
        raise DataError(f"unsupported shard dtype {dataset.manifest['dtype']}")
    return config


def build_model(config: LlamaConfig, run: TrainingRun, world: World, precision: Precision) -> Llama:
    """The same full model on every rank (one seed), then sharded: initialization never depends on the
    world size, and no two shards are correlated."""
    generator = torch.Generator().manual_seed(run.spec.training.seed)
    model = Llama(config)
    model.init_weights(generator)
    model.to(world.device)
    if run.spec.training.activation_checkpointing:
        for block in model.model.layers:
            block.checkpointing = True
    if run.spec.training.compile:
        if world.distributed:  # FSDP2: compile each block, between the sharding hooks
            for block in model.model.layers:
                block.compile()
        else:  # one process: the whole forward and loss as one graph (fuses the output projection's loss)
            model.loss = torch.compile(model.loss)  # type: ignore[method-assign]
    return distributed.shard(model, world, precision)


def make_batches(dataset: Dataset, config: LlamaConfig, training: TrainingSpec, world: World) -> Batches:
    """This rank's training and validation batches (the global batch is the same on any world size)."""
    return Batches(
        dataset.stream("train"),
        dataset.stream("validation"),
        config.max_seq_len,
        training.micro_batch_size,
        training.gradient_accumulation_steps,
        world.rank,
        world.size,
        training.seed,
    )
