"""The torch-free shape arithmetic counts what the built model holds."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from llmtrain.api.trainingrun import ModelSpec
from llmtrain.model.flops import flops_per_token
from llmtrain.model.llama import Llama, count_parameters
from llmtrain.model.shape import LlamaConfig, default_intermediate_size, parameter_count, spec_parameter_count

SPECS = [
    {"layers": 2, "hidden_size": 64, "heads": 4},  # derived intermediate size (256), full attention
    {"layers": 3, "hidden_size": 96, "heads": 6, "kv_heads": 2, "intermediate_size": 200},  # GQA, explicit width
    {"layers": 1, "hidden_size": 128, "heads": 8, "kv_heads": 1, "tie_embeddings": True},  # MQA, tied
    {"layers": 2, "hidden_size": 80, "heads": 4, "kv_heads": 2, "intermediate_size": 96, "tie_embeddings": True},
    {"layers": 4, "hidden_size": 384, "heads": 6},  # 2/3 x 4 x 384 = 1024 exactly: no rounding
]


@pytest.mark.parametrize("fields", SPECS)
@pytest.mark.parametrize("vocab_size", [97, 512])
def test_counts_equal_those_of_the_built_model(fields, vocab_size):
    spec = ModelSpec(**fields)
    config = LlamaConfig.from_spec(spec, vocab_size)
    with torch.device("meta"):
        model = Llama(config)
    assert spec_parameter_count(spec, vocab_size) == parameter_count(config) == count_parameters(model)
    without = count_parameters(model, exclude_embedding=True)
    assert parameter_count(config, exclude_embedding=True) == without
    assert flops_per_token(config, without) == 6 * without + 12 * config.layers * config.hidden_size * 2048


def test_the_spec_defaults_resolve_as_llama_does():
    config = LlamaConfig.from_spec(ModelSpec(layers=2, hidden_size=112, heads=4), 512)
    assert config.kv_heads == 4 and config.kv_width == 112 and config.head_dim == 28
    assert config.intermediate_size == default_intermediate_size(112) == 512  # 298 rounded up to 256s
    assert default_intermediate_size(384) == 1024 and default_intermediate_size(4096) == 11008


def test_importing_the_shape_pulls_in_no_torch():
    code = "import sys, llmtrain.model.shape; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "False"
