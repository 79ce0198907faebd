"""Building what a training process trains: the checked dataset, the model's shape, the (sharded) model."""

from __future__ import annotations

from pathlib import Path

import torch

from .. import storage
from ..api.trainingrun import TrainingRun, TrainingSpec
from ..model.llama import Llama, LlamaConfig
from ..model.shape import resolve
from . import distributed, initial
from .distributed import World
from .loader import Batches, DataError, Dataset
from .mixture import Mixture, Source
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


def open_datasets(uris: list[str], names: list[str], cache: Path, world: World) -> list[Dataset]:
    """Each DataSource's dataset, checked; a mixture's tokenizers must be identical (same vocabulary hash)."""
    if len(uris) != len(names):
        raise DataError(
            f"{len(uris)} --data given for {len(names)} DataSources ({', '.join(names)}): pass one per source, in order"
        )
    datasets = [open_dataset(uri, cache, world) for uri in uris]
    if len(datasets) > 1:
        hashes = [initial.vocabulary_hash(d.tokenizer_json(), f"{d.location}/tokenizer") for d in datasets]
        for name, dataset, digest in zip(names[1:], datasets[1:], hashes[1:], strict=True):
            if digest != hashes[0]:
                raise DataError(
                    f"spec.data: the tokenizers of DataSource {names[0]} ({datasets[0].location}, vocabulary hash"
                    f" {hashes[0][:12]}) and {name} ({dataset.location}, {digest[:12]}) differ: a mixture needs one"
                    f" vocabulary; give {name} spec.tokenizer.fromDataSourceRef: {{name: {names[0]}}}"
                )
    return datasets


def model_config(run: TrainingRun, dataset: Dataset, origin: initial.Origin | None = None) -> LlamaConfig:
    """The shape the run trains: spec.model, or the starting weights' with which spec.model must agree."""
    if dataset.manifest["dtype"] not in ("uint16", "uint32"):
        raise DataError(f"unsupported shard dtype {dataset.manifest['dtype']}")
    if origin is None:
        return LlamaConfig.from_spec(run.spec.model, dataset.vocab_size)
    initial.check_tokenizer(origin, dataset.vocab_size, dataset.tokenizer_json(), dataset.location)
    return resolve(run.spec.model, dataset.vocab_size, origin.config, origin.uri)


def build_model(
    config: LlamaConfig, run: TrainingRun, world: World, precision: Precision, empty: bool = False
) -> Llama:
    """The same full model on every rank (one seed), then sharded: initialization never depends on the
    world size, and no two shards are correlated. `empty` (starting weights will fill it): built on the
    meta device, sharded, then only each rank's shards allocated (never the full model on a rank of a
    sharded run), and no time spent initializing what is about to be overwritten."""
    if empty:
        with torch.device("meta"):
            model = Llama(config)
    else:
        model = Llama(config)
        model.init_weights(torch.Generator().manual_seed(run.spec.training.seed))
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
    model = distributed.shard(model, world, precision, run.spec.resources.sharding)
    if empty:
        model.to_empty(device=world.device)
        model.tie_embeddings()  # to_empty gives an unsharded module's tied weight two copies: one again
        model.reset_rotary()
    return model


def make_batches(
    datasets: list[Dataset], run: TrainingRun, config: LlamaConfig, training: TrainingSpec, world: World
) -> Mixture:
    """This rank's training and validation batches (the global batch is the same on any world size)."""
    sources = []
    for (name, share), dataset in zip(run.spec.mixture(), datasets, strict=True):
        try:
            batches = Batches(
                dataset.stream("train"),
                dataset.stream("validation"),
                config.max_seq_len,
                training.micro_batch_size,
                training.gradient_accumulation_steps,
                world.rank,
                world.size,
                training.seed,
            )
        except DataError as exc:
            raise DataError(f"DataSource {name} ({dataset.location}): {exc}") if len(datasets) > 1 else exc from None
        sources.append(Source(name, share, batches))
    return Mixture(sources, training.seed)
