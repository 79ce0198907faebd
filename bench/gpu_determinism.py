"""Which kernels make two fresh processes disagree on a GPU? Each variant runs the same first training
step (the ~124M Llama of bench/gpu.py, seed 0, one fixed batch, bf16 autocast) in several fresh processes
and compares, bit for bit, every module's forward output, the loss and the gradients.

    python bench/gpu_determinism.py [--processes 3] [--cpu]

Variants: default kernels; `training.deterministic` (llmtrain.train.distributed.make_deterministic) with
PyTorch's attention choice, and with each SDPA backend forced (math, flash, memory-efficient).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch

VARIANTS = ("default", "deterministic", "deterministic+math", "deterministic+flash", "deterministic+efficient")


def digest(tensor: torch.Tensor) -> str:
    """A position-weighted checksum of the exact bits, computed where the tensor lives (logits are GBs)."""
    bits = tensor.detach().float().contiguous().view(-1).view(torch.int32).long()
    weights = torch.arange(1, bits.numel() + 1, device=bits.device) % 65521
    return f"{int(bits.sum())}:{int((bits * weights).sum())}"


def child(variant: str, device: str) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from llmtrain.model.llama import Llama, LlamaConfig
    from llmtrain.train.distributed import make_deterministic

    if variant.startswith("deterministic"):
        make_deterministic()
    small = device == "cpu"
    config = LlamaConfig(
        vocab_size=512 if small else 32768,
        hidden_size=64 if small else 768,
        intermediate_size=128 if small else 2048,
        layers=2 if small else 12,
        heads=4 if small else 12,
        kv_heads=4 if small else 12,
        max_seq_len=64 if small else 1024,
    )
    model = Llama(config)
    model.init_weights(torch.Generator().manual_seed(0))
    model.to(device)
    batch = (4 if small else 32, config.max_seq_len + 1)
    tokens = torch.randint(4, config.vocab_size, batch, generator=torch.Generator().manual_seed(1))
    inputs, targets = tokens[:, :-1].to(device), tokens[:, 1:].to(device)
    outputs: list[tuple[str, str]] = []
    for name, module in model.named_modules():
        if name and name.count(".") <= 4:
            module.register_forward_hook(
                lambda m, a, out, name=name: outputs.append((name, digest(out))) if torch.is_tensor(out) else None
            )
    backend = {
        "math": SDPBackend.MATH,
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
    }
    forced = variant.split("+")[1] if "+" in variant else None
    backends = [backend[forced]] if forced else [*backend.values(), SDPBackend.CUDNN_ATTENTION]
    with sdpa_kernel(backends), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        loss = model.loss(inputs, targets)
    loss.backward()
    gradients = digest(torch.cat([p.grad.flatten().float() for p in model.parameters()]))
    print(json.dumps({"loss": loss.item(), "outputs": outputs, "gradients": gradients}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--cpu", action="store_true", help="smoke test on the CPU (tiny model)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = "cpu" if args.cpu else "cuda"
    if args.child:
        return child(args.child, device)
    summary = {}
    for variant in VARIANTS:
        runs = []
        for _ in range(args.processes):
            command = [sys.executable, __file__, "--child", variant, *(["--cpu"] if args.cpu else [])]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                runs.append({"error": result.stderr.strip().splitlines()[-1][:300]})
                break
            runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
        if "error" in runs[-1]:
            summary[variant] = runs[-1]
            continue
        first = runs[0]["outputs"]
        divergent = next(
            (name for index, (name, value) in enumerate(first) if any(r["outputs"][index][1] != value for r in runs)),
            None,
        )
        summary[variant] = {
            "losses": sorted({r["loss"] for r in runs}),
            "forward_identical": divergent is None,
            "first_divergent_module": divergent,
            "gradients_identical": len({r["gradients"] for r in runs}) == 1,
        }
        print(variant, json.dumps(summary[variant]), flush=True)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
