#!/usr/bin/env python3
"""Write resnet/tests/fixtures/param_counts.json and resnet/tests/fixtures/timm_archs.json.

Run from the workspace root:  .venv/bin/python scripts/gen_param_counts.py   (no network, no weights)
param_counts.json: {name: number of trainable parameters (sum of p.numel() over model.parameters())};
  torchvision names are plain (e.g. "resnet50"), timm names are prefixed "timm/" (e.g. "timm/resnet50d").
  BN running stats / num_batches_tracked are NOT counted.
timm_archs.json: {timm name: {block, layers, channels, stem_type, stem_width, stem_out_channels, avg_down,
  cardinality, base_width}} read from the constructed module tree.
"""
import json
import os

import timm
import torch.nn as nn
import torchvision
from timm.models.resnet import BasicBlock, Bottleneck

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "resnet", "tests", "fixtures")

TV = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
      "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"]
TIMM = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet18d", "resnet34d", "resnet26",
        "resnet26d", "resnet50d", "resnet101d", "resnet152d", "resnet10t", "resnet14t", "resnet26t", "resnet50t"]


def count(m):
    return sum(p.numel() for p in m.parameters())


def timm_arch(m):
    blk = m.layer1[0]
    block = "bottleneck" if isinstance(blk, Bottleneck) else "basic"
    assert isinstance(blk, (BasicBlock, Bottleneck))
    layers = [len(getattr(m, f"layer{i}")) for i in range(1, 5)]
    expansion = blk.expansion
    # planes per stage = block output channels / expansion
    channels = [(getattr(m, f"layer{i}")[-1].bn2 if block == "basic" else getattr(m, f"layer{i}")[-1].bn3).num_features
                // expansion for i in range(1, 5)]
    if isinstance(m.conv1, nn.Sequential):
        convs = [c for c in m.conv1 if isinstance(c, nn.Conv2d)]
        stem_chs = [c.out_channels for c in convs]
        stem_width = stem_chs[1]
        stem_type = "deep" if stem_chs[0] == stem_chs[1] else "deep_tiered"
        assert stem_type == "deep" or stem_chs[0] == 3 * (stem_width // 4)
        stem_out = stem_chs[2]
    else:
        stem_type, stem_width, stem_out = "classic", m.conv1.out_channels, m.conv1.out_channels
    # avg_down: downsample = Sequential(pool|Identity, conv1x1, bn) instead of Sequential(conv, bn)
    ds = next(getattr(m, f"layer{i}")[0].downsample for i in range(1, 5)
              if getattr(m, f"layer{i}")[0].downsample is not None)
    avg_down = len(ds) == 3
    if block == "bottleneck":
        cardinality = blk.conv2.groups
        width = blk.conv2.out_channels
        planes = channels[0]
        base_width = width // cardinality * 64 // planes
        assert int(planes * base_width / 64) * cardinality == width
    else:
        cardinality, base_width = 1, 64
    return dict(block=block, layers=layers, channels=channels, stem_type=stem_type, stem_width=stem_width,
                stem_out_channels=stem_out, avg_down=avg_down, cardinality=cardinality, base_width=base_width)


def main():
    counts, archs = {}, {}
    for name in TV:
        m = getattr(torchvision.models, name)(weights=None)
        counts[name] = count(m)
        print(f"torchvision {name:20s} {counts[name]:>12,d}")
    for name in TIMM:
        m = timm.create_model(name, pretrained=False)
        counts["timm/" + name] = count(m)
        archs[name] = timm_arch(m)
        print(f"timm        {name:20s} {counts['timm/' + name]:>12,d}  {json.dumps(archs[name])}")
    with open(os.path.join(OUT, "param_counts.json"), "w") as f:
        json.dump(counts, f, indent=2)
        f.write("\n")
    with open(os.path.join(OUT, "timm_archs.json"), "w") as f:
        json.dump(archs, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
