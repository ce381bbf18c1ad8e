"""Tiny PyTorch checkpoints for weights/tests/pth.rs (run with the repository's .venv python).

- tiny_state_dict.pth: a plain state dict (what `torch.save(model.state_dict(), path)` writes) of a
  1x1 conv + BN + linear, with arange values so the test knows them without a reference file. The
  linear weight is stored transposed (a column-major view) to exercise strided storage.
- whole_module.pth: the same module pickled whole (`torch.save(model, path)`), which needs Python code
  to rebuild and must be refused.
- nested_checkpoint.pth: a training checkpoint `{"epoch": 3, "state_dict": ...}`, also refused.
"""
from pathlib import Path

import torch
from torch import nn

OUT = Path(__file__).resolve().parent.parent / "weights" / "tests" / "fixtures"


def model() -> nn.Module:
    m = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 3))
    with torch.no_grad():
        for p in list(m.parameters()) + [m[1].running_mean, m[1].running_var]:
            p.copy_(torch.arange(p.numel(), dtype=torch.float32).reshape(p.shape))
    return m


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    m = model()
    sd = m.state_dict()
    # Column-major storage: the values of arange(6).reshape(3, 2), stored as the transpose of a (2, 3).
    sd["3.weight"] = torch.arange(6, dtype=torch.float32).reshape(2, 3).t()
    assert not sd["3.weight"].is_contiguous()
    torch.save(sd, OUT / "tiny_state_dict.pth")
    torch.save(m, OUT / "whole_module.pth")
    torch.save({"epoch": 3, "state_dict": m.state_dict()}, OUT / "nested_checkpoint.pth")


if __name__ == "__main__":
    main()
