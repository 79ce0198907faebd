"""Starting weights in one process: a tied transformers Llama loads to its logits; an own checkpoint brings
its AdamW moments (not its hyperparameters) when asked; what the weights' tokenizer rules out is refused."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from llmtrain.model.llama import Llama, LlamaConfig
from llmtrain.train import initial
from llmtrain.train.checkpoint import Checkpointer
from llmtrain.train.distributed import World

ONE = World(0, 0, 1, torch.device("cpu"))
CONFIG = LlamaConfig(vocab_size=64, layers=1, hidden_size=16, heads=2, kv_heads=1, intermediate_size=32, max_seq_len=16)
TOKENIZER = json.dumps({"version": "1.0", "model": {"type": "WordLevel", "vocab": {"a": 0}, "unk_token": "a"}}).encode()


def test_a_tied_transformers_llama_loads_to_its_logits(tmp_path):
    from transformers import LlamaConfig as HfConfig
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    shape = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    hf = LlamaForCausalLM(HfConfig(vocab_size=96, num_key_value_heads=2, tie_word_embeddings=True, **shape)).eval()
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    origin = initial.locate(str(tmp_path / "hf"), "latest", None, tmp_path / "cache", ONE)
    assert origin.config.tie_embeddings and origin.kind == initial.HUGGING_FACE
    model = Llama(origin.config)
    initial.load(origin, model, None, ONE)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    tokens = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (model(tokens) - hf(tokens).logits).abs().max() < 1e-5
    with pytest.raises(initial.InitError, match=r"spec\.init\.optimizerState: .* holds no optimizer state"):
        initial.load(origin, Llama(origin.config), torch.optim.AdamW(model.parameters()), ONE)


def trained_checkpoint(root, tokenizer: bytes = TOKENIZER) -> tuple[Llama, torch.optim.Optimizer]:
    model = Llama(CONFIG)
    model.init_weights(torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.9))
    for _ in range(3):
        model.loss(torch.arange(8).view(1, 8), torch.arange(1, 9).view(1, 8)).backward()
        optimizer.step()
        optimizer.zero_grad()
    record = {"seed": 0, "model": dict(vars(CONFIG)), "vocabularyHash": initial.vocabulary_hash(tokenizer)}
    Checkpointer(str(root), ONE, 3, 1, root.parent / "staging").save(3, model, optimizer, record)
    return model, optimizer


def test_an_own_checkpoint_brings_its_moments_but_not_its_hyperparameters(tmp_path):
    trained, old = trained_checkpoint(tmp_path / "base")
    origin = initial.locate(str(tmp_path / "base"), "latest", None, tmp_path / "cache", ONE)
    assert origin.description == f"{tmp_path / 'base'}/step-00000003 (llmtrain checkpoint, step 3)"
    model = Llama(CONFIG)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.95))
    initial.load(origin, model, optimizer, ONE)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), trained.parameters(), strict=True))
    moments = [optimizer.state[p]["exp_avg"] for p in model.parameters()]
    assert all(torch.equal(a, old.state[p]["exp_avg"]) for a, p in zip(moments, trained.parameters(), strict=True))
    assert optimizer.param_groups[0]["lr"] == 5e-4 and optimizer.param_groups[0]["betas"] == (0.9, 0.95)
    fresh = Llama(CONFIG)
    fresh_optimizer = torch.optim.AdamW(fresh.parameters())
    initial.load(origin, fresh, None, ONE)  # weights only: the optimizer starts fresh
    assert not fresh_optimizer.state
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), trained.parameters(), strict=True))


def test_a_checkpoint_of_another_tokenizer_or_vocabulary_is_refused(tmp_path):
    trained_checkpoint(tmp_path / "base")
    origin = initial.locate(str(tmp_path / "base"), "latest", None, tmp_path / "cache", ONE)
    initial.check_tokenizer(origin, 64, TOKENIZER, "data")  # the same tokenizer: fine
    with pytest.raises(initial.InitError, match="vocabulary of 64 ids, the dataset's tokenizer \\(data\\) 80"):
        initial.check_tokenizer(origin, 80, TOKENIZER, "data")
    other = TOKENIZER.replace(b'"a"', b'"b"')
    with pytest.raises(initial.InitError, match="trained with another tokenizer"):
        initial.check_tokenizer(origin, 64, other, "data")
    assert initial.vocabulary_hash(json.dumps(json.loads(TOKENIZER), indent=4).encode()) == initial.vocabulary_hash(
        TOKENIZER
    )  # formatting is not a difference


def test_what_is_neither_weights_nor_a_checkpoint_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(initial.InitError, match=r"neither a Hugging Face model .* nor an llmtrain checkpoint"):
        initial.locate(str(tmp_path / "empty"), "latest", None, tmp_path / "cache", ONE)
    trained_checkpoint(tmp_path / "base")
    shutil.rmtree(tmp_path / "base" / "step-00000003")
    (tmp_path / "base" / "latest").write_text("step-00000003")
    with pytest.raises(initial.InitError, match="no complete checkpoint"):
        initial.locate(str(tmp_path / "base"), "latest", None, tmp_path / "cache", ONE)


def test_an_unreadable_tokenizer_beside_the_weights_is_refused(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "Nonsense"}}')
    origin = initial.Origin(initial.HUGGING_FACE, "m", CONFIG, tmp_path)
    with pytest.raises(initial.InitError, match=r"m/tokenizer\.json: not a tokenizer\.json the tokenizers library"):
        initial.check_tokenizer(origin, 64, TOKENIZER, "data")
    with pytest.raises(initial.InitError, match=r"data: not a tokenizer\.json"):
        initial.vocabulary_hash(b"{not json", "data")


def test_an_oversized_config_is_refused_before_it_is_read(tmp_path):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_bytes(b" " * ((1 << 20) + 1))
    with pytest.raises(initial.InitError, match=r"config\.json: 1048577 bytes, more than the 1048576"):
        initial.locate(str(tmp_path / "hf"), "latest", None, tmp_path / "cache", ONE)
