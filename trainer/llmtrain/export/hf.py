"""safetensors in the Hugging Face layout, proven by loading it with transformers offline.

`model.safetensors` (sharded above 2 GB), `config.json` (LlamaConfig), `generation_config.json` and the
tokenizer files; `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained` load them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..model.hf import hf_model
from ..model.llama import Llama
from .checkpoint import ExportError, greedy
from .checks import max_relative_error, verdict
from .formats import ExportInputs, FullPrecisionOnly


def write(model: Llama, tokenizer_dir: Path, out: Path, max_shard_size: str = "2GB") -> Path:
    from transformers import GenerationConfig, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    meta = json.loads((tokenizer_dir / "tokenizer_meta.json").read_text())
    if not (tokenizer_dir / "tokenizer.json").exists():
        raise ExportError(f"{tokenizer_dir} has no tokenizer.json: rerun the DataSource with this llmtrain version")
    twin = hf_model(model.config)
    twin.load_state_dict(model.state_dict(), strict=True)
    twin.generation_config = GenerationConfig(bos_token_id=0, eos_token_id=1, pad_token_id=2)
    twin.save_pretrained(out, safe_serialization=True, max_shard_size=max_shard_size)
    special = {f"{name}_token": meta["specialTokens"][name]["token"] for name in ("bos", "eos", "pad", "unk")}
    PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_dir / "tokenizer.json"), **special).save_pretrained(out)
    return out


@torch.no_grad()
def validate(
    out: Path,
    model: Llama,
    prompts: list[list[int]],
    corpus: list[str],
    training_tokenizer: Any,
    greedy_tokens: int,
    max_relative_error_limit: float,
) -> dict[str, Any]:
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    loaded = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    worst = max_relative_error(model, prompts, lambda x: loaded(x).logits)
    reference = greedy(model, prompts[0], greedy_tokens)
    generated = loaded.generate(
        torch.tensor([prompts[0]]), max_new_tokens=greedy_tokens, min_new_tokens=greedy_tokens, do_sample=False
    )[0, len(prompts[0]) :].tolist()
    expected = training_tokenizer.encode_batch(corpus)
    tokenizer_match = all(
        tokenizer.encode(t, add_special_tokens=False) == e for t, e in zip(corpus, expected, strict=True)
    )
    return verdict(
        f"transformers {transformers.__version__}",
        worst,
        generated == reference,
        max_relative_error_limit,
        tokenizer_match,
    )


class HuggingFace(FullPrecisionOnly):
    """safetensors in the Hugging Face layout as an export format: the `hf/` directory, full precision only."""

    def write(self, inputs: ExportInputs, staging: Path, quantization: str) -> Path:
        return write(inputs.model, inputs.tokenizer_dir, staging / "hf")

    def validate(self, inputs: ExportInputs, artifact: Path) -> dict[str, Any]:
        limits = inputs.limits
        return validate(
            artifact,
            inputs.model,
            inputs.prompts,
            inputs.corpus,
            inputs.training_tokenizer,
            limits.greedy_tokens,
            limits.max_relative_error,
        )


FORMAT = HuggingFace()
