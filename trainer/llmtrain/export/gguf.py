"""GGUF for llama.cpp: llama architecture metadata, the tokenizer embedded (byte-level BPE), F32/F16/Q8_0/Q4_0 tensors,
proven by loading the file in llama.cpp (llama-cpp-python) and comparing with the training model.

Tensor names follow llama.cpp's converter (`model.embed_tokens` → `token_embd`, `...self_attn.q_proj` →
`blk.N.attn_q`, ...). Our RoPE is the rotate-half convention; llama.cpp's llama architecture expects
interleaved pairs, so the q and k rows are permuted back as `convert_hf_to_gguf.py` does (by head for
q, by key/value head for k). Norms stay F32. Byte-level BPE tokenizers are written as the `gpt2`
tokenizer model with the `gpt-2` pre-tokenizer (the same regex we train with).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..model.llama import Llama
from .checkpoint import ExportError
from .checks import greedy_matches, max_relative_error, verdict
from .formats import FULL_PRECISION, ExportInputs
from .perplexity import measure
from .perplexity import verdict as perplexity_verdict

TYPES = {"f32": "F32", "f16": "F16", "q8_0": "Q8_0", "q4_0": "Q4_0"}
#: The quantized tensor type written for each quantization of the spec that GGUF holds.
QUANTIZATIONS = {"int8": "q8_0", "q8_0": "q8_0", "int4": "q4_0", "q4_0": "q4_0"}
BLOCK = 32  # Q8_0 / Q4_0 block size: rows must be a multiple of it


def _names(layers: int) -> dict[str, str]:
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    parts = {
        "input_layernorm": "attn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for i in range(layers):
        for ours, theirs in parts.items():
            names[f"model.layers.{i}.{ours}.weight"] = f"blk.{i}.{theirs}.weight"
    return names


def interleave(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of q or k from rotate-half order to llama.cpp's interleaved RoPE pairs."""
    return (
        weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def check_quantizable(model: Llama, kind: str) -> None:
    if kind in ("q8_0", "q4_0"):
        config = model.config
        widths = {"hiddenSize": config.hidden_size, "intermediateSize": config.intermediate_size}
        bad = {k: v for k, v in widths.items() if v % BLOCK}
        if bad:
            raise ExportError(
                f"GGUF {kind.upper()} needs rows that are multiples of {BLOCK}; {bad} are not: choose such sizes"
                " or export without quantization"
            )


def _tokenizer(writer: Any, tokenizer_dir: Path) -> None:
    meta = json.loads((tokenizer_dir / "tokenizer_meta.json").read_text())
    ids = {n: meta["specialTokens"][n]["id"] for n in ("bos", "eos", "pad", "unk")}
    if meta["type"] != "bpe":
        # llama.cpp runs SentencePiece models with the BPE algorithm ("llama") or as unigram without byte
        # fallback ("t5"), and has no WordPiece: neither reproduces our unigram or WordPiece token ids
        raise ExportError(
            f"GGUF cannot carry a {meta['type']} tokenizer that llama.cpp reproduces exactly: use tokenizer.type"
            " bpe for GGUF exports (safetensors, ONNX and TorchScript take any tokenizer)"
        )
    if reason := _not_gpt2_byte_level(json.loads((tokenizer_dir / "tokenizer.json").read_text())):
        raise ExportError(
            f"GGUF cannot carry this bpe tokenizer: {reason}, and llama.cpp's gpt2 tokenizer would split text"
            " differently; GGUF needs a byte-level BPE with the GPT-2 pre-tokenizer (safetensors, ONNX and"
            " TorchScript take any tokenizer)"
        )
    _byte_level_bpe(writer, tokenizer_dir, set(ids.values()))
    writer.add_bos_token_id(ids["bos"])
    writer.add_eos_token_id(ids["eos"])
    writer.add_pad_token_id(ids["pad"])
    writer.add_unk_token_id(ids["unk"])
    writer.add_add_bos_token(False)


def _not_gpt2_byte_level(spec: dict[str, Any]) -> str | None:
    """Why a tokenizer.json (an imported one: `spec.tokenizer.from`) is not the byte-level BPE with the
    GPT-2 regex that llama.cpp's `gpt-2` pre-tokenizer reproduces; None when it is."""
    pre = spec.get("pre_tokenizer") or {}
    if pre.get("type") != "ByteLevel" or not pre.get("use_regex", True) or pre.get("add_prefix_space"):
        return f"its pre-tokenizer is {pre.get('type')} {json.dumps(pre, sort_keys=True)}"
    if spec.get("normalizer"):
        return f"it has a {spec['normalizer'].get('type')} normalizer"
    return None


def _byte_level_bpe(writer: Any, tokenizer_dir: Path, specials: set[int]) -> None:
    """A byte-level BPE as llama.cpp's `gpt2` tokenizer with the `gpt-2` pre-tokenizer."""
    import gguf

    spec = json.loads((tokenizer_dir / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    tokens = [None] * len(vocab)
    for token, index in vocab.items():
        tokens[index] = token
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if i in specials else gguf.TokenType.NORMAL for i in range(len(tokens))]
    )
    writer.add_token_merges(merges)


def write(model: Llama, tokenizer_dir: Path, out: Path, kind: str = "f32") -> Path:
    """Write `model` as GGUF with tensors in `kind` (f32, f16, q8_0, q4_0; 1-D tensors stay F32)."""
    import gguf

    check_quantizable(model, kind)
    config = model.config
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name("llmtrain")
    writer.add_context_length(config.max_seq_len)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_head_count(config.heads)
    writer.add_head_count_kv(config.kv_heads)
    writer.add_layer_norm_rms_eps(config.norm_eps)
    writer.add_vocab_size(config.vocab_size)
    qtype = getattr(gguf.GGMLQuantizationType, TYPES[kind])
    writer.add_file_type({"f32": 0, "f16": 1, "q8_0": 7, "q4_0": 2}[kind])
    _tokenizer(writer, tokenizer_dir)
    names = _names(config.layers)
    state = model.state_dict()
    if config.tie_embeddings:
        state.pop("lm_head.weight", None)  # llama.cpp reuses token_embd when output is absent
    for name, tensor in state.items():
        weight = tensor.detach().float()
        if name.endswith("q_proj.weight"):
            weight = interleave(weight, config.heads)
        elif name.endswith("k_proj.weight"):
            weight = interleave(weight, config.kv_heads)
        data = weight.numpy()
        if data.ndim == 1 or kind == "f32":
            writer.add_tensor(names[name], data.astype(np.float32))
        elif kind == "f16":
            writer.add_tensor(names[name], data.astype(np.float16))
        else:
            writer.add_tensor(names[name], gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def _load(path: Path, context: int) -> Any:
    try:
        from llama_cpp import Llama as LlamaCpp
    except ImportError:
        raise ExportError("checking a GGUF export needs llama-cpp-python: `make llama-cpp` installs it") from None

    # an F32 key/value cache: the check measures the exported weights, not the runtime's cache precision
    return LlamaCpp(
        model_path=str(path),
        n_ctx=max(context, 256),
        logits_all=True,
        verbose=False,
        n_threads=2,
        seed=0,
        type_k=0,
        type_v=0,
    )


def _runtime_name() -> str:
    import llama_cpp  # after _load, which says how to install it

    return f"llama.cpp (llama-cpp-python {llama_cpp.__version__})"


def _logits(runtime: Any, tokens: list[int]) -> torch.Tensor:
    runtime.reset()
    runtime.eval(tokens)
    return torch.from_numpy(np.array(runtime.scores[: len(tokens)], dtype=np.float32))


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
    runtime = _load(out, model.config.max_seq_len)  # a clear error when llama-cpp-python is missing
    one = lambda x: _logits(runtime, x[0].tolist()).unsqueeze(0)  # noqa: E731 - llama.cpp runs one sequence
    worst = max_relative_error(model, prompts, one)
    expected = training_tokenizer.encode_batch(corpus)
    tokenizer_match = all(
        runtime.tokenize(t.encode(), add_bos=False, special=False) == e for t, e in zip(corpus, expected, strict=True)
    )
    return verdict(
        _runtime_name(),
        worst,
        greedy_matches(model, prompts[0], greedy_tokens, one),
        max_relative_error_limit,
        tokenizer_match,
    )


def perplexity(path: Path, windows: list[list[int]], context: int) -> float:
    runtime = _load(path, context)
    return measure(lambda ids: _logits(runtime, ids), windows)


def validate_quantized(
    quantized: Path, full: Path, kind: str, windows: list[list[int]], context: int, max_increase: float
) -> dict[str, Any]:
    """The `kind` (q8_0, q4_0) artifact's validation perplexity against the F32 one, both in llama.cpp."""
    reference, measured = perplexity(full, windows, context), perplexity(quantized, windows, context)
    return perplexity_verdict(_runtime_name(), reference, measured, max_increase, "F32", tensorType=kind.upper())


class Gguf:
    """GGUF as an export format: `model-f32.gguf`, and `model-<kind>.gguf` for a quantization it holds."""

    def quantization(self, model: Llama, requested: str) -> str | None:
        kind = QUANTIZATIONS.get(requested)
        check_quantizable(model, kind or "f32")
        return kind

    def write(self, inputs: ExportInputs, staging: Path, quantization: str) -> Path:
        kind = "f32" if quantization == FULL_PRECISION else quantization
        return write(inputs.model, inputs.tokenizer_dir, staging / f"model-{kind}.gguf", kind)

    def validate(self, inputs: ExportInputs, artifact: Path) -> dict[str, Any]:
        limits = inputs.limits
        check = validate(
            artifact,
            inputs.model,
            inputs.prompts,
            inputs.corpus,
            inputs.training_tokenizer,
            limits.greedy_tokens,
            limits.max_relative_error,
        )
        return {**check, "tensorType": "F32"}

    def validate_quantized(self, inputs: ExportInputs, artifact: Path, full: Path, quantization: str) -> dict[str, Any]:
        context, limit = inputs.model.config.max_seq_len, inputs.limits.max_perplexity_increase
        return validate_quantized(artifact, full, quantization, inputs.draw_windows(), context, limit)


FORMAT = Gguf()
