"""DataSource: where text comes from and how it becomes a tokenizer and token shards."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Ge, Gt, Le, MaxLen, MinLen
from pydantic import AfterValidator, Field

from .base import ApiModel, CelRule, Matches, rule_error
from .common import (
    POD_CONTROLS,
    QUEUE_NAME,
    QUEUE_PRIORITY_RULE,
    WORKLOAD_PRIORITY,
    Conditions,
    Failure,
    Image,
    LocalObjectReference,
    ObjectName,
    PlacedPodResources,
    PodControls,
    PodResources,
    SecretKeySelector,
    SecretReference,
    StorageUri,
    Timestamp,
)
from .resource import AGE, PrinterColumn, Resource

#: A glob or path below a volume or the local machine; `..` is never allowed.
SourcePath = Annotated[
    str,
    MinLen(1),
    MaxLen(1024),
    CelRule(r"!self.matches('(^|/)\\.\\.(/|$)')", "must not contain '..' path segments"),
]

HttpUrl = Annotated[
    str,
    MaxLen(2048),
    # a pattern, not a CEL rule: CEL's cost budget (1,000 URLs x 64 sources x 2,048 characters) made the real
    # API server refuse the CRD; a pattern has no such budget
    Matches(
        r"^https?://[^\s/@]+(/\S*)?$",
        "must be an http:// or https:// URL without credentials (put them in a Secret and set authSecret)",
    ),
]


class S3Source(ApiModel):
    """Objects under an S3 (or S3-compatible) prefix."""

    secret_hints: ClassVar[dict[str, str]] = {
        key: "put AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in a Secret and set credentialsSecret: {name: <secret>}"
        for key in ("accessKey", "accessKeyId", "secretKey", "secretAccessKey", "sessionToken", "credentials")
    }

    bucket: Annotated[
        str,
        Matches(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", "must be an S3 bucket name: 3-63 of a-z, 0-9, '.', '-'"),
    ] = Field(description="Bucket name.")
    prefix: Annotated[str, MaxLen(1024)] = Field(default="", description="Key prefix to list (paginated).")
    endpoint: HttpUrl | None = Field(default=None, description="Endpoint URL of an S3-compatible store; AWS if unset.")
    region: Annotated[str, MaxLen(64)] | None = Field(default=None, description="Region, e.g. us-east-1.")
    credentials_secret: SecretReference | None = Field(
        default=None,
        description="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and optionally AWS_SESSION_TOKEN);"
        " the pod's ambient identity (IRSA, instance profile) is used when unset.",
    )


class HttpSource(ApiModel):
    """Files fetched over HTTP(S): streamed, size-limited, retried with backoff."""

    urls: Annotated[list[HttpUrl], MinLen(1), MaxLen(1000)] = Field(description="URLs to fetch.")
    auth_secret: SecretKeySelector | None = Field(
        default=None, description="Secret key holding the Authorization header value, e.g. 'Bearer <token>'."
    )
    max_bytes: Annotated[int, Gt(0)] = Field(
        default=10 * 1024**3, description="Largest body accepted per URL, in bytes."
    )


class PvcSource(ApiModel):
    """Files on a PersistentVolumeClaim in the same namespace."""

    claim_name: ObjectName = Field(description="Name of the PersistentVolumeClaim.")
    path: Annotated[
        SourcePath, CelRule("!self.startsWith('/')", "must be relative to the volume's root (no leading '/')")
    ] = Field(default="**/*", description="Glob below the volume's root, e.g. corpus/*.jsonl.gz.")


class LocalSource(ApiModel):
    """Files on the machine running `llmtrain run` (local runner only; refused in a cluster)."""

    path: SourcePath = Field(description="A path or glob; relative paths are relative to the run file's folder.")


class SqlSource(ApiModel):
    """Rows of a SQL query (SQLAlchemy); the database URL comes from a Secret."""

    secret_hints: ClassVar[dict[str, str]] = {
        key: "put the SQLAlchemy URL in a Secret and set urlSecret: {name: <secret>, key: <key>}"
        for key in ("url", "password", "connectionString")
    }

    url_secret: SecretKeySelector = Field(description="Secret key holding the SQLAlchemy database URL.")
    query: Annotated[str, MinLen(1), MaxLen(65536)] = Field(description="A SELECT query returning the text column.")
    text_column: Annotated[str, MinLen(1), MaxLen(253)] = Field(default="text", description="Column holding the text.")


class HuggingFaceSource(ApiModel):
    """A Hugging Face `datasets` dataset on disk (never downloaded from a hub): saved with
    `save_to_disk`, or a folder of data files (parquet, jsonl, csv, txt) that `load_dataset` reads."""

    path: Annotated[
        str,
        MinLen(1),
        MaxLen(1024),
        Matches(
            r"^(pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/.*)?|[^:]+)$",
            "must be pvc://<claim>/<path> or a local path (local runner only)",
        ),
        CelRule(r"!self.matches('(^|/)\\.\\.(/|$)')", "must not contain '..' path segments"),
    ] = Field(description="The dataset folder: pvc://claim/path, or a local path relative to the run file.")
    split: Annotated[str, MinLen(1), MaxLen(253)] = Field(default="train", description="Which split to read.")


class Source(ApiModel):
    """One input: exactly one of s3, http, pvc, local, sql, huggingface."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "[has(self.s3), has(self.http), has(self.pvc), has(self.local), has(self.sql), has(self.huggingface)]"
            ".exists_one(x, x)",
            "each source must set exactly one of s3, http, pvc, local, sql, huggingface",
        ),
    )

    s3: S3Source | None = Field(default=None, description="Objects under an S3 prefix.")
    http: HttpSource | None = Field(default=None, description="HTTP(S) URLs.")
    pvc: PvcSource | None = Field(default=None, description="Files on a PersistentVolumeClaim.")
    local: LocalSource | None = Field(default=None, description="Local files (local runner only).")
    sql: SqlSource | None = Field(default=None, description="Rows of a SQL query.")
    huggingface: HuggingFaceSource | None = Field(
        default=None, description="A Hugging Face datasets dataset on disk (local or PVC)."
    )


def compile_pattern(pattern: str) -> Any:
    """`pattern` compiled by RE2, which matches in time linear in the text (no backtracking); raises
    `re2.error` for what RE2 cannot run (backreferences, lookaround)."""
    import re2

    options = re2.Options()
    options.log_errors = False
    return re2.compile(pattern, options)


def _linear_time_pattern(pattern: str) -> str:
    """Refuse at validation a pattern ingest could not run; the API server cannot check this."""
    try:
        compile_pattern(pattern)
    except Exception as exc:  # re2.error
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise rule_error(
            f"not a pattern RE2 (the linear-time engine ingest uses) accepts: {detail}; backreferences and"
            " lookaround are not supported"
        ) from None
    return pattern


ProhibitedPattern = Annotated[str, MinLen(1), MaxLen(1024), AfterValidator(_linear_time_pattern)]


class ValidationSpec(ApiModel):
    """Document filters; every rejection is counted by reason in status.stats.rejected."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule("self.maxChars > self.minChars", "must be greater than minChars", ".maxChars"),
    )

    min_chars: Annotated[int, Ge(0)] = Field(default=64, description="Shortest document kept, in characters.")
    max_chars: Annotated[int, Gt(0)] = Field(default=1_000_000, description="Longest document kept, in characters.")
    min_quality_score: Annotated[float, Ge(0.0), Le(1.0)] = Field(
        default=0.0,
        description="Lowest heuristic quality score kept (0-1: symbol ratio, repetition, word length, alphabetic"
        " fraction); 0 keeps all.",
    )
    prohibited_patterns: Annotated[list[ProhibitedPattern], MaxLen(256)] = Field(
        default_factory=list,
        description="Regular expressions in RE2 syntax (no backreferences or lookaround), matched in linear time;"
        " a document matching any is rejected. `llmtrain validate` and ingest refuse a pattern RE2 cannot"
        " compile; the API server does not check this.",
    )


class NormalizationSpec(ApiModel):
    """Text normalization applied before dedup and tokenization."""

    unicode_form: Literal["NFC", "NFKC", "NFD", "NFKD", "none"] = Field(
        default="NFC", description="Unicode normalization form, or none."
    )
    lowercase: bool = Field(default=False, description="Lowercase all text.")
    strip_control_chars: bool = Field(default=True, description="Remove control characters except tab and newline.")
    collapse_whitespace: bool = Field(default=False, description="Collapse runs of spaces and blank lines.")


class MinHashSpec(ApiModel):
    """Near-duplicate removal by MinHash LSH over word n-grams."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule("self.numPerm % self.bands == 0", "must divide numPerm (rows per band = numPerm / bands)", ".bands"),
    )

    enabled: bool = Field(default=True, description="Remove near-duplicates.")
    threshold: Annotated[float, Gt(0.0), Le(1.0)] = Field(
        default=0.8,
        description="Jaccard similarity of word n-gram sets at or above which documents are duplicates;"
        " LSH proposes candidates, their exact similarity decides.",
    )
    num_perm: Annotated[int, Ge(8), Le(1024)] = Field(default=112, description="Number of hash permutations.")
    bands: Annotated[int, Ge(1), Le(1024)] = Field(
        default=16,
        description="LSH bands (rows per band = numPerm / bands); more bands find more candidates, which exact"
        " verification then checks.",
    )
    ngram: Annotated[int, Ge(1), Le(32)] = Field(default=5, description="Words per shingle.")
    seed: Annotated[int, Ge(0)] = Field(default=1, description="Seed of the hash permutations.")


class DedupSpec(ApiModel):
    """Duplicate removal."""

    exact: bool = Field(default=True, description="Remove exact duplicates (content hash after normalization).")
    minhash: MinHashSpec = Field(default_factory=MinHashSpec, description="Near-duplicate removal.")


class SpecialTokens(ApiModel):
    """Special tokens, with fixed ids in this order: bos=0, eos=1, pad=2, unk=3."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "self.bos != self.eos && self.bos != self.pad && self.bos != self.unk && self.eos != self.pad"
            " && self.eos != self.unk && self.pad != self.unk",
            "bos, eos, pad and unk must be four different strings",
        ),
    )

    bos: Annotated[str, MinLen(1), MaxLen(64)] = Field(default="<s>", description="Beginning of sequence (id 0).")
    eos: Annotated[str, MinLen(1), MaxLen(64)] = Field(default="</s>", description="End of sequence (id 1).")
    pad: Annotated[str, MinLen(1), MaxLen(64)] = Field(default="<pad>", description="Padding (id 2).")
    unk: Annotated[str, MinLen(1), MaxLen(64)] = Field(default="<unk>", description="Unknown (id 3).")


class TokenizerSpec(ApiModel):
    """The tokenizer trained on a sample of the cleaned corpus, or an existing one (`from`,
    `fromDataSourceRef`)."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "!(has(self.from) && has(self.fromDataSourceRef))",
            "set tokenizer.from or tokenizer.fromDataSourceRef, not both",
        ),
    )

    type: Literal["bpe", "wordpiece", "unigram"] = Field(
        default="bpe", description="bpe (byte-level), wordpiece, or unigram (SentencePiece)."
    )
    vocab_size: Annotated[int, Ge(384), Le(1_048_576)] = Field(
        default=32000, description="Vocabulary size including special tokens; shards are uint16 below 65536."
    )
    special_tokens: SpecialTokens = Field(default_factory=SpecialTokens, description="Special tokens.")
    train_sample_bytes: Annotated[int, Ge(1024)] = Field(
        default=256 * 1024**2, description="Bytes of text sampled to train the tokenizer."
    )
    from_uri: StorageUri | None = Field(
        default=None,
        alias="from",
        description="Use this existing tokenizer instead of training one: a Hugging Face tokenizer.json (BPE or"
        " WordPiece), a SentencePiece unigram .model, or a folder holding one (another DataSource's"
        " <output>/tokenizer); s3://, pvc:// or (local runner) a path. type, vocabSize and specialTokens must"
        " describe it (special tokens at ids 0-3); trainSampleBytes is not used.",
    )
    from_data_source_ref: LocalObjectReference | None = Field(
        default=None,
        alias="fromDataSourceRef",
        description="Use the tokenizer of this DataSource (same namespace), so that several DataSources share one"
        " vocabulary: the operator waits until it is Ready and reads its status.tokenizerUri; `llmtrain ingest`"
        " takes its output from the same run file. Checked as `from` is.",
    )


class SplitSpec(ApiModel):
    """The deterministic, hash-based train/validation split."""

    validation_fraction: Annotated[float, Ge(0.0), Le(0.5)] = Field(
        default=0.01, description="Fraction of documents held out for validation."
    )
    seed: Annotated[int, Ge(0)] = Field(default=0, description="Seed of the split hash.")


class DataOutputSpec(ApiModel):
    """Where the tokenizer, shards and manifest are written."""

    uri: StorageUri | None = Field(
        default=None,
        description="s3://, pvc:// or (local runner) a path; default: the operator's default storage"
        " under <namespace>/datasources/<name>/.",
    )
    shard_tokens: Annotated[int, Ge(1024), Le(4_294_967_296)] = Field(
        default=100_000_000, description="Tokens per shard file."
    )


class StageResources(ApiModel):
    """CPU and memory of one ingest stage's pods (workers > 1); a field left unset is `resources`'."""

    scan: PodResources | None = Field(default=None, description="Scan pods (one per part).")
    dedup: PodResources | None = Field(default=None, description="Near-duplicate search pods (one per part).")
    cluster: PodResources | None = Field(default=None, description="The clustering pod: memory follows the pairs.")
    tokenizer: PodResources | None = Field(
        default=None,
        description="The tokenizer pod: memory follows trainSampleBytes (BPE about 8x it, unigram about 22x).",
    )
    encode: PodResources | None = Field(default=None, description="Encode pods (one per part).")
    manifest: PodResources | None = Field(default=None, description="The manifest pod.")


class DataSourceSpec(ApiModel):
    """What to ingest and how to clean, dedupe, tokenize and shard it."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (QUEUE_PRIORITY_RULE,)

    sources: Annotated[list[Source], MinLen(1), MaxLen(64)] = Field(description="Inputs, read in order.")
    format: Literal["auto", "txt", "jsonl", "parquet"] = Field(
        default="auto",
        description="Input format; auto detects by extension. gzip and zstd are detected by magic bytes.",
    )
    txt_unit: Literal["file", "paragraph", "line"] = Field(
        default="file",
        description="How txt input is cut into documents: whole files, blank-line separated paragraphs, or lines.",
    )
    text_field: Annotated[str, MinLen(1), MaxLen(253)] = Field(
        default="text", description="Field (jsonl) or column (parquet) holding the text."
    )
    validation: ValidationSpec = Field(default_factory=ValidationSpec, description="Document filters.")
    normalization: NormalizationSpec = Field(default_factory=NormalizationSpec, description="Text normalization.")
    dedup: DedupSpec = Field(default_factory=DedupSpec, description="Duplicate removal.")
    tokenizer: TokenizerSpec = Field(default_factory=TokenizerSpec, description="Tokenizer training.")
    split: SplitSpec = Field(default_factory=SplitSpec, description="Train/validation split.")
    output: DataOutputSpec = Field(default_factory=DataOutputSpec, description="Output location.")
    image: Image | None = Field(default=None, description="Workload image; the operator's default when unset.")
    resources: PlacedPodResources = Field(
        default_factory=PlacedPodResources, description="CPU, memory and placement of each ingest pod."
    )
    stage_resources: StageResources = Field(
        default_factory=StageResources,
        description="Per stage, where it differs from resources (workers > 1: each stage is its own Job).",
    )
    workers: Annotated[int, Ge(1), Le(256)] = Field(
        default=1,
        description="Parts the input is divided into: with more than 1, each ingest stage is a Job and scan, dedup"
        " and encode run one pod per part.",
    )
    pod: PodControls = Field(default_factory=PodControls, description=POD_CONTROLS)
    queue_name: ObjectName | None = Field(default=None, description=QUEUE_NAME)
    workload_priority_class_name: ObjectName | None = Field(default=None, description=WORKLOAD_PRIORITY)


class DataStats(ApiModel):
    """Counts from the last ingest."""

    inputs: int = Field(default=0, description="Files, objects, URLs or queries read.")
    documents_in: int = Field(default=0, description="Documents read.")
    documents_out: int = Field(default=0, description="Documents kept.")
    bytes_in: int = Field(default=0, description="Bytes read.")
    rejected: dict[str, int] = Field(
        default_factory=dict, description="Rejected documents (and unreadable inputs, as *_input) by reason."
    )
    repaired: int = Field(default=0, description="Documents whose encoding was detected or repaired.")
    duplicates_exact: int = Field(default=0, description="Exact duplicates removed.")
    duplicates_near: int = Field(default=0, description="Near duplicates removed.")
    dedup_percent: float = Field(default=0.0, description="Duplicates removed, in percent of valid documents.")
    tokens_train: int = Field(default=0, description="Tokens in the train split.")
    tokens_validation: int = Field(default=0, description="Tokens in the validation split.")


class DataSourceStatus(ApiModel):
    """What the operator observed."""

    phase: Literal["Pending", "Running", "Succeeded", "Failed"] | None = Field(
        default=None, description="Summary phase."
    )
    conditions: Conditions = Field(default_factory=list, description="Conditions; Ready is the summary.")
    observed_generation: int | None = Field(default=None, description="The generation this status describes.")
    message: str | None = Field(default=None, description="What is happening, or why it failed.")
    stats: DataStats | None = Field(default=None, description="Counts from the last ingest.")
    stage: Literal["Scan", "Dedup", "Cluster", "Tokenizer", "Encode", "Manifest"] | None = Field(
        default=None,
        description="The ingest stage running (workers > 1): Scan, Dedup and Encode run a task per part in"
        " parallel; Cluster, Tokenizer and Manifest one.",
    )
    progress: str | None = Field(default=None, description="The stage's parts done of total, e.g. 3/8.")
    documents_per_second: int | None = Field(
        default=None,
        description="Documents the running stage's finished tasks processed (Scan: read; Encode: encoded), per"
        " second since the stage started.",
    )
    eta: str | None = Field(default=None, description="Estimated time until the stage's last part is done.")
    tokenizer_uri: str | None = Field(default=None, description="Where the tokenizer files are.")
    shards_uri: str | None = Field(default=None, description="Where the shards and manifest.json are.")
    start_time: Timestamp | None = Field(default=None, description="When ingest started.")
    completion_time: Timestamp | None = Field(default=None, description="When ingest finished.")
    failure: Failure | None = Field(default=None, description="Why it failed, pinned to the pod.")


class DataSource(Resource):
    """Ingest text, clean and dedupe it, train a tokenizer, and write token shards."""

    KIND: ClassVar[str] = "DataSource"
    PLURAL: ClassVar[str] = "datasources"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("ds",)
    PRINTER_COLUMNS: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn("Phase", "string", ".status.phase", "Summary phase."),
        PrinterColumn("Stage", "string", ".status.stage", "The stage running.", priority=1),
        PrinterColumn("Parts", "string", ".status.progress", "The stage's parts done of total.", priority=1),
        PrinterColumn("ETA", "string", ".status.eta", "Estimated time until the stage is done.", priority=1),
        PrinterColumn("Docs", "integer", ".status.stats.documentsOut", "Documents kept."),
        PrinterColumn("Tokens", "integer", ".status.stats.tokensTrain", "Tokens in the train split."),
        PrinterColumn("Dedup%", "number", ".status.stats.dedupPercent", "Duplicates removed, percent."),
        AGE,
        PrinterColumn("Message", "string", ".status.message", "What is happening.", priority=1),
    )

    kind: Literal["DataSource"] = Field(default="DataSource", description="DataSource")
    spec: DataSourceSpec = Field(description="Desired state.")
    status: DataSourceStatus | None = Field(default=None, description="Observed state.")
