#!/usr/bin/env python3
"""Generate small golden fixtures for the zoo ResNet implementation.

Run from the workspace root:  .venv/bin/python scripts/gen_fixtures.py
Writes resnet/tests/fixtures/golden/<case>.safetensors. Deterministic (fixed seeds, CPU only, no network).

Every file holds f32 tensors:
  input, logits, features (after layer4, before pooling), stage1..stage4 (outputs of layer1..layer4),
  model.<state_dict key> (num_batches_tracked excluded),
and __metadata__["config"] = JSON with the architecture knobs (see CASES below).
Special cases:
  big256  - only input, logits, features, stage1 (+ model.*).
  basic   - additionally `logits_f64` (float64 dtype): the same net evaluated in float64.
  grad    - train mode: input, targets (f32 class indices), logits, loss ([1]), grad.<param>,
            model.<name> (state before the step), after.<bn>.running_mean/running_var (after the forward).
"""
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "resnet", "tests", "fixtures", "golden")

torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)

# name: dict(block, layers, channels, stem_type, stem_width, avg_down, cardinality, base_width,
#            batch, hw, num_classes, [v1], [seed])
CASES = {
    "basic": dict(block="basic", layers=[2, 1, 1, 1], channels=[8, 16, 24, 32], stem_type="",
                  stem_width=64, avg_down=False, cardinality=1, base_width=64,
                  batch=2, hw=(37, 45), num_classes=10),
    "bottleneck": dict(block="bottleneck", layers=[2, 1, 1, 1], channels=[8, 16, 24, 32], stem_type="",
                       stem_width=64, avg_down=False, cardinality=1, base_width=64,
                       batch=2, hw=(33, 41), num_classes=10),
    # grouped width = floor(planes*16/64)*4 = planes -> 8,16,24,32 (>= 8)
    "resnext": dict(block="bottleneck", layers=[1, 1, 1, 1], channels=[8, 16, 24, 32], stem_type="",
                    stem_width=64, avg_down=False, cardinality=4, base_width=16,
                    batch=2, hw=(35, 35), num_classes=10),
    "wide": dict(block="bottleneck", layers=[1, 1, 1, 1], channels=[8, 16, 24, 32], stem_type="",
                 stem_width=64, avg_down=False, cardinality=1, base_width=128,
                 batch=2, hw=(31, 39), num_classes=10),
    "resnet_d": dict(block="bottleneck", layers=[2, 1, 1, 1], channels=[8, 16, 24, 32], stem_type="deep",
                     stem_width=8, avg_down=True, cardinality=1, base_width=64,
                     batch=2, hw=(37, 43), num_classes=10),
    "resnet_d_basic": dict(block="basic", layers=[2, 1, 1, 1], channels=[8, 16, 24, 32], stem_type="deep",
                           stem_width=8, avg_down=True, cardinality=1, base_width=64,
                           batch=1, hw=(41, 33), num_classes=10),
    "resnet_t": dict(block="bottleneck", layers=[1, 1, 1, 1], channels=[8, 16, 24, 32], stem_type="deep_tiered",
                     stem_width=16, avg_down=True, cardinality=1, base_width=64,
                     batch=2, hw=(39, 37), num_classes=10),
    "v1": dict(block="bottleneck", layers=[2, 1, 1, 1], channels=[8, 16, 24, 32], stem_type="",
               stem_width=64, avg_down=False, cardinality=1, base_width=64,
               batch=2, hw=(33, 35), num_classes=10, v1=True),
    "big256": dict(block="basic", layers=[1, 1, 1, 1], channels=[64, 16, 16, 16], stem_type="",
                   stem_width=64, avg_down=False, cardinality=1, base_width=64,
                   batch=1, hw=(256, 256), num_classes=10),
    "grad": dict(block="basic", layers=[1, 1, 1, 1], channels=[4, 8, 8, 8], stem_type="",
                 stem_width=64, avg_down=False, cardinality=1, base_width=64,
                 batch=4, hw=(32, 32), num_classes=5, train=True),
    # timm's `output_stride`: later stages dilated instead of strided. ResNet-50's and ResNet-50-D's own
    # layouts (depths 3-4-6-3, classic / deep stem, plain / avg-down shortcuts) at reduced widths.
    "resnet50_os16": dict(block="bottleneck", layers=[3, 4, 6, 3], channels=[4, 8, 12, 16], stem_type="",
                          stem_width=64, avg_down=False, cardinality=1, base_width=64,
                          batch=2, hw=(48, 56), num_classes=10, output_stride=16),
    "resnet50_os8": dict(block="bottleneck", layers=[3, 4, 6, 3], channels=[4, 8, 12, 16], stem_type="",
                         stem_width=64, avg_down=False, cardinality=1, base_width=64,
                         batch=2, hw=(48, 56), num_classes=10, output_stride=8),
    "resnet50d_os16": dict(block="bottleneck", layers=[3, 4, 6, 3], channels=[4, 8, 12, 16], stem_type="deep",
                           stem_width=8, avg_down=True, cardinality=1, base_width=64,
                           batch=2, hw=(50, 45), num_classes=10, output_stride=16),
    "resnet50d_os8": dict(block="bottleneck", layers=[3, 4, 6, 3], channels=[4, 8, 12, 16], stem_type="deep",
                          stem_width=8, avg_down=True, cardinality=1, base_width=64,
                          batch=2, hw=(50, 45), num_classes=10, output_stride=8),
    # Whole blocks of 16 channels on both sides of every block conv (64-256 out), so that under the
    # channel-blocked layout (NCHW16c) the blocks run on it; v1 puts the stride on the first 1x1.
    "bottleneck16": dict(block="bottleneck", layers=[2, 1, 1, 1], channels=[16, 32, 48, 64], stem_type="",
                         stem_width=64, avg_down=False, cardinality=1, base_width=64,
                         batch=2, hw=(37, 45), num_classes=10),
    "v1_16": dict(block="bottleneck", layers=[2, 1, 1, 1], channels=[16, 32, 48, 64], stem_type="",
                  stem_width=64, avg_down=False, cardinality=1, base_width=64,
                  batch=2, hw=(33, 35), num_classes=10, v1=True),
}


def build(c):
    block = BasicBlock if c["block"] == "basic" else Bottleneck
    model = ResNet(block=block, layers=c["layers"], channels=c["channels"], stem_width=c["stem_width"],
                   stem_type=c["stem_type"], avg_down=c["avg_down"], cardinality=c["cardinality"],
                   base_width=c["base_width"], num_classes=c["num_classes"], zero_init_last=False,
                   output_stride=c.get("output_stride", 32))
    if c.get("v1"):
        for m in model.modules():
            if isinstance(m, Bottleneck) and m.conv2.stride != (1, 1):
                m.conv1.stride = m.conv2.stride
                m.conv2.stride = (1, 1)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = 1e-3
    return model


@torch.no_grad()
def randomize(model, gen, gamma=(0.5, 1.5)):
    def normal(t, std, mean=0.0):
        t.copy_(torch.randn(t.shape, generator=gen) * std + mean)

    def uniform(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)

    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]
            normal(m.weight, (2.0 / fan_in) ** 0.5)
            if m.bias is not None:
                normal(m.bias, 0.2)
        elif isinstance(m, nn.BatchNorm2d):
            uniform(m.weight, *gamma)
            normal(m.bias, 0.2)
            normal(m.running_mean, 0.3)
            uniform(m.running_var, 0.5, 2.0)
        elif isinstance(m, nn.Linear):
            normal(m.weight, (1.0 / m.in_features) ** 0.5)
            normal(m.bias, 0.2)


def stem_out_channels(c):
    return c["stem_width"] * 2 if c["stem_type"] in ("deep", "deep_tiered") else 64


def config_json(name, c):
    cfg = {
        "case": name,
        "block": c["block"],
        "layers": c["layers"],
        "channels": c["channels"],
        "stem_type": c["stem_type"] or "classic",
        # timm semantics: classic stem is always 64 channels (stem_width ignored, recorded as 64);
        # deep / deep_tiered: stem_width is timm's stem_width, stem output = 2 * stem_width.
        "stem_width": c["stem_width"],
        "stem_out_channels": stem_out_channels(c),
        "avg_down": c["avg_down"],
        "cardinality": c["cardinality"],
        "base_width": c["base_width"],
        "stride_on": "1x1" if c.get("v1") else "3x3",
        "bn_eps": 1e-3 if c.get("v1") else 1e-5,
        "num_classes": c["num_classes"],
        "output_stride": c.get("output_stride", 32),
    }
    if c.get("train"):
        cfg["train"] = True
        cfg["bn_momentum"] = 0.1
    return json.dumps(cfg)


def state_tensors(model, prefix):
    return {prefix + k: v.detach().to(torch.float32).contiguous().clone()
            for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def forward_stages(model, x):
    act1 = model.act1(model.bn1(model.conv1(x)))
    h = model.maxpool(act1)
    stages = [act1]
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        h = layer(h)
        stages.append(h)
    logits = model.forward_head(h)
    return stages, h, logits


def gen_case(idx, name, c):
    gen = torch.Generator().manual_seed(1000 + idx)
    torch.manual_seed(1000 + idx)
    model = build(c).to(torch.float32)
    # Deep nets (16 blocks) get smaller BatchNorm scales, so activations stay O(1) instead of growing block
    # by block (PyTorch's own f32 error grows with them).
    randomize(model, gen, gamma=(0.3, 0.7) if c.get("output_stride") else (0.5, 1.5))
    b, (h, w) = c["batch"], c["hw"]
    x = torch.randn((b, 3, h, w), generator=gen)
    out = {"input": x}

    if c.get("train"):
        targets = torch.randint(0, c["num_classes"], (b,), generator=gen)
        out.update(state_tensors(model, "model."))
        model.train()
        logits = model(x)
        loss = F.cross_entropy(logits, targets)
        loss.backward()
        out["targets"] = targets.to(torch.float32)
        out["logits"] = logits.detach()
        out["loss"] = loss.detach().reshape(1)
        for pname, p in model.named_parameters():
            out["grad." + pname] = p.grad.detach().clone()
        for k, v in model.state_dict().items():
            if k.endswith("running_mean") or k.endswith("running_var"):
                out["after." + k] = v.detach().clone()
        max_logit = logits.abs().max().item()
        info = f"loss={loss.item():.4f}"
    else:
        model.eval()
        with torch.no_grad():
            stages, feats, logits = forward_stages(model, x)
            ref = model(x)
            assert torch.allclose(ref, logits, atol=1e-5, rtol=1e-5), name
        out["logits"] = logits
        out["features"] = feats
        nst = 1 if name == "big256" else 4
        for i in range(nst):
            out[f"stage{i + 1}"] = stages[i + 1]
        if c.get("output_stride"):
            if name.endswith("os16"):
                out["act1"] = stages[0]
            # What timm's own API returns, checked against the stage outputs above.
            inter = model.forward_intermediates(x, indices=[0, 1, 2, 3, 4], intermediates_only=True)
            for i, t in enumerate(inter):
                assert torch.equal(t, stages[i]), (name, i)
            info_ = [(f["num_chs"], f["reduction"], f["module"]) for f in model.feature_info]
            out["feature_info"] = torch.tensor([[a, b] for a, b, _ in info_], dtype=torch.float32)
        out.update(state_tensors(model, "model."))
        if name == "basic":
            m64 = build(c).double()
            m64.load_state_dict(model.state_dict())
            m64.eval()
            with torch.no_grad():
                l64 = m64(x.double())
            out["logits_f64"] = l64
            info = f"max|logits_f32-logits_f64|={(l64 - logits.double()).abs().max().item():.2e}"
        else:
            info = ""
        max_logit = logits.abs().max().item()
        std_feat = feats.std().item()
        info = f"features std={std_feat:.3f} shape={tuple(feats.shape)} " + info

    out = {k: (v if v.dtype == torch.float64 else v.to(torch.float32)).contiguous().clone() for k, v in out.items()}
    path = os.path.join(OUT_DIR, f"{name}.safetensors")
    save_file(out, path, metadata={"config": config_json(name, c)})
    size = os.path.getsize(path)
    print(f"{name:15s} max|logit|={max_logit:8.3f} {info} file={size / 1024:.1f} KiB tensors={len(out)}")
    return size


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    only = set(sys.argv[1:])
    total = 0
    for idx, (name, c) in enumerate(CASES.items()):
        if only and name not in only:
            continue
        total += gen_case(idx, name, c)
    print(f"total {total / 1024 / 1024:.2f} MiB")


if __name__ == "__main__":
    main()
