"""Where ingest writes below an output, and how a stage records that it is done.

```
<output>/manifest.json  tokenizer/  train/  validation/  .lock
<output>/.work/part-<i>-of-<n>/       scan parts (parts.py)
<output>/.work/dedup-<i>-of-<n>/      verified duplicate pairs of dedup task i (dedup/search.py)
<output>/.work/cluster/               the dropped documents (dedup/cluster.py)
<output>/.work/tokenizer/             the manifest's tokenizer entry; the manifest being replaced
<output>/.work/encode-<i>-of-<n>/     the shards written for part i (encode.py)
```
Every stage's output ends with `DONE`, written last and naming the spec hash: a rerun redoes only what
has no current `DONE`. `.work` is removed once the manifest is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

from .. import locking, storage
from ..api.datasource import DataSourceSpec
from ..errors import BadInput

MANIFEST = "manifest.json"
WORK = ".work"
#: A tokenizer file's name as ingest writes it (one path component, never `..`)
TOKENIZER_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
#: What ingest writes below an output; nothing else there is ever deleted.
OUTPUT_ENTRIES = ("train", "validation", "tokenizer", WORK, MANIFEST, locking.LOCK_NAME)


class EmptyCorpus(BadInput, ValueError):
    """No document survived: bad input, with the counts that explain why."""


class LinkedOutput(BadInput):
    """A directory ingest writes into is a symbolic link: it would write (and delete) elsewhere."""


def spec_hash(spec: DataSourceSpec) -> str:
    """What the output depends on: the spec less where it is written and how it is run."""
    content = spec.to_wire()
    for key in ("image", "resources", "stageResources", "workers"):
        content.pop(key, None)
    content.get("output", {}).pop("uri", None)
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def task_uri(output: str, stage: str, index: int, count: int) -> str:
    """The work folder of task `index` of an indexed stage (dedup, encode)."""
    return storage.join(output, WORK, f"{stage}-{index:05d}-of-{count:05d}")


def stage_uri(output: str, stage: str) -> str:
    """The work folder of a one-task stage (cluster, tokenizer)."""
    return storage.join(output, WORK, stage)


def mark_done(uri: str, digest: str, **facts: Any) -> None:
    storage.write_bytes(storage.join(uri, "DONE"), json.dumps({"specHash": digest, **facts}).encode())


def done(uri: str, digest: str) -> dict[str, Any] | None:
    """The facts a finished stage recorded, when it finished for this spec; else None."""
    try:
        facts = json.loads(storage.read_bytes(storage.join(uri, "DONE")))
    except (OSError, ValueError):
        return None
    return facts if isinstance(facts, dict) and facts.get("specHash") == digest else None


def read_json(uri: str) -> Any:
    return json.loads(storage.read_bytes(uri))


def read_manifest(output: str) -> dict[str, Any] | None:
    uri = storage.join(output, MANIFEST)
    if not storage.exists(uri):
        return None
    return read_json(uri)


def current_manifest(output: str, spec: DataSourceSpec) -> dict[str, Any] | None:
    """The manifest in place when it was written for this very spec."""
    existing = read_manifest(output)
    return existing if existing and existing.get("specHash") == spec_hash(spec) else None


def refuse_linked_output(output: str) -> None:
    """A local output's own entries must not be links: ingest would write and delete through them."""
    if storage.is_s3(output):
        return
    root = storage.local_path(output)
    for name in OUTPUT_ENTRIES:
        if os.path.islink(root / name):
            raise LinkedOutput(
                f"{root / name} is a symbolic link; ingest writes and deletes its own files below {root} only:"
                " remove the link or choose another output (spec.output.uri or --output)"
            )
