#!/usr/bin/env python3
"""Golden fixtures for CLIP's ResNets (zoo `resnet` image towers, `zoo-clip` text tower, tokenizer, zero-shot).

Run from the workspace root:  .venv/bin/python scripts/gen_clip_fixtures.py [--rn50 DIR]
Deterministic (fixed seeds, CPU, one thread, no network). References come from OpenCLIP (`open_clip_torch`)
and timm with random weights; see scripts/README.md for the pinned versions.

Writes (committed):
  resnet/tests/fixtures/golden/clip_rn.safetensors      OpenCLIP `ModifiedResNet`, reduced: width 8, 64x64 input
  resnet/tests/fixtures/golden/clip_rn_x4.safetensors   RN50x4's odd shape reduced: width 10 (stem 5, 5, 10), 96x96
  resnet/tests/fixtures/golden/clip_rn_224.safetensors  width 8 at CLIP's 224x224 (7x7 grid, 50 tokens)
      input (float16), stem and stage1..4 (clip_rn_224: stage4 only), embedding (attention pool output),
      embedding_f64 (the same net in float64), model.<key> (float16; OpenCLIP's `visual.` names without the
      prefix, num_batches_tracked left out); metadata `config`: JSON with layers, width, heads, output_dim,
      image_size, and in clip_rn `timm_keys` (JSON: timm's name of every tensor -> OpenCLIP's, from timm's own converter on a
      width-8 twin, which timm's ByobNet loads strictly and which computes OpenCLIP's embedding).
  resnet/tests/fixtures/clip_param_counts.json   parameter counts of OpenCLIP's RN50..RN50x64 image towers and
      timm's `resnet*_clip` (equal), with embed dims, heads and input sizes
  clip/tests/fixtures/clip_tiny.safetensors   a whole OpenCLIP `CLIP` (that reduced tower, a 2-layer text tower of
      width 8 over the full 49408-token vocabulary; float16 weights): images, tokens (OpenCLIP's tokenizer on `texts`), image and
      text embeddings, logits, zero-shot probabilities (one template; the 80-template ImageNet ensemble), text
      embeddings with QuickGELU, float64 versions of each; `model.<key>` in OpenCLIP's layout; metadata `config`:
      `model_cfg` (OpenCLIP's format), `texts`, `labels`, `single_template`.
  clip/tests/fixtures/clip_param_counts.json  OpenCLIP's text-tower and total counts of RN50..RN50x64
  clip/tests/fixtures/tokenizer_corpus.json   OpenCLIP's tokenizer on ~1700 strings (ids and cleaned text)

With `--rn50 DIR` it also writes a full-size RN50 CLIP with random weights (not committed: ~400 MB) for
`clip/tests/rn50_full.rs`: DIR/open_clip_model.safetensors, DIR/open_clip_config.json, DIR/reference.safetensors.
"""
import argparse
import json
import math
import os
import random
import sys
import unicodedata

import ftfy
import numpy as np
import open_clip
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from open_clip.modified_resnet import ModifiedResNet
from open_clip.tokenizer import SimpleTokenizer, _clean_lower
from open_clip.zero_shot_classifier import build_zero_shot_classifier
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES
from safetensors.torch import save_file
from timm.models.byobnet import ByobNet, ByoBlockCfg, ByoModelCfg, _convert_openai_clip, checkpoint_filter_fn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESNET_FIX = os.path.join(ROOT, "resnet", "tests", "fixtures")
CLIP_FIX = os.path.join(ROOT, "clip", "tests", "fixtures")

torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)

# name: ModifiedResNet arguments, batch, seed, which outputs to store. The heads are free here (OpenCLIP derives
# width * 32 / 64 for its named models): 2 and 3 heads of 64 channels, 4 heads of 32.
TOWERS = {
    "clip_rn": dict(layers=[2, 1, 1, 1], width=4, heads=2, output_dim=24, image_size=64, batch=2, seed=11,
                    store=["stem", "stage1", "stage2", "stage3", "stage4"]),
    # RN50x4's shape reduced: a width that is no power of two (stem 3, 3, 6) and an odd grid (96 / 32 = 3)
    "clip_rn_x4": dict(layers=[1, 2, 1, 1], width=6, heads=3, output_dim=20, image_size=96, batch=2, seed=12,
                       store=["stem", "stage1", "stage2", "stage3", "stage4"]),
    # CLIP's own geometry: 224x224 input, 7x7 grid, 50 tokens
    "clip_rn_224": dict(layers=[1, 1, 1, 1], width=4, heads=4, output_dim=16, image_size=224, batch=1, seed=13,
                        store=["stage4"]),
}
# timm's ByobNet rounds bottleneck widths to multiples of 8, so its twin (for the key map) is width 8.
TIMM_TWIN = dict(layers=[2, 1, 1, 1], width=8, heads=4, output_dim=24, image_size=64, batch=2, seed=14)


@torch.no_grad()
def randomize(model, gen):
    """Every parameter and buffer re-drawn (OpenCLIP's own init zeroes bn3 and leaves BN statistics at 0/1)."""
    def normal(t, std, mean=0.0):
        t.copy_(torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype) * std + mean)

    def uniform(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=gen, dtype=torch.float64).to(t.dtype) * (hi - lo) + lo)

    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            normal(m.weight, (2.0 / (m.weight[0].numel())) ** 0.5)
        elif isinstance(m, nn.BatchNorm2d):
            uniform(m.weight, 0.5, 1.5)
            normal(m.bias, 0.2)
            normal(m.running_mean, 0.3)
            uniform(m.running_var, 0.5, 2.0)
        elif isinstance(m, nn.LayerNorm):
            uniform(m.weight, 0.5, 1.5)
            normal(m.bias, 0.1)
        elif isinstance(m, nn.MultiheadAttention):
            normal(m.in_proj_weight, m.embed_dim ** -0.5)
            normal(m.in_proj_bias, 0.1)
        elif isinstance(m, nn.Linear):
            normal(m.weight, m.in_features ** -0.5)
            if m.bias is not None:
                normal(m.bias, 0.1)
        elif isinstance(m, nn.Embedding):
            normal(m.weight, 1.0)
    for name, p in model.named_parameters(recurse=True):
        if name.endswith("positional_embedding"):
            normal(p, 0.5)
        elif name == "text_projection":
            normal(p, p.shape[0] ** -0.5)
        elif name == "logit_scale":
            p.fill_(math.log(10.0) + 0.25)


@torch.no_grad()
def round_to_half(model):
    """Weights (and inputs) are stored in float16, as OpenAI's own checkpoints are, to keep the fixtures small; the
    references are computed in float32 and float64 from exactly those rounded values."""
    for t in model.state_dict().values():
        if t.is_floating_point():
            t.copy_(t.half().float())


def tensors_of(model, prefix):
    return {prefix + k: v.detach().to(torch.float32).contiguous().clone()
            for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def tower(c):
    return ModifiedResNet(layers=c["layers"], output_dim=c["output_dim"], heads=c["heads"],
                          image_size=c["image_size"], width=c["width"])


def tower_outputs(m, x):
    out = {"stem": m.stem(x)}
    h = out["stem"]
    for i, layer in enumerate((m.layer1, m.layer2, m.layer3, m.layer4)):
        h = layer(h)
        out[f"stage{i + 1}"] = h
    out["embedding"] = m.attnpool(h)
    return out


def timm_key_map():
    """timm's ByobNet of a CLIP tower's shape loads OpenCLIP weights through timm's own converter, strictly, and
    computes the same embedding. Returns {timm key: OpenCLIP key} of every tensor."""
    c = TIMM_TWIN
    gen = torch.Generator().manual_seed(c["seed"])
    m = tower(c).eval()
    randomize(m, gen)
    x = torch.randn((c["batch"], 3, c["image_size"], c["image_size"]), generator=gen)
    w = c["width"]
    blocks = tuple(ByoBlockCfg(type="bottle", d=d, c=w * 4 * 2 ** i, s=1 if i == 0 else 2, br=0.25)
                   for i, d in enumerate(c["layers"]))
    cfg = ByoModelCfg(blocks=blocks, stem_chs=(w // 2, w // 2, w), stem_type="", stem_pool="avg2",
                      downsample="avg", aa_layer="avg", head_type="attn_abs")
    net = ByobNet(cfg, num_classes=c["output_dim"], img_size=c["image_size"]).eval()
    assert net.head.num_heads == c["heads"]
    sd = {k: v for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked")}
    # timm's converter, one key at a time (checkpoint_filter_fn only converts a dict holding visual.conv1.weight).
    mapping = {}
    for k in sd:
        (new,) = _convert_openai_clip({"visual." + k: sd[k]}, net).keys()
        mapping[new] = k
    converted = checkpoint_filter_fn({"visual." + k: v for k, v in sd.items()}, net)
    assert set(converted) == set(mapping), "per-key conversion differs from the whole-dict one"
    net.load_state_dict(converted, strict=True)
    with torch.no_grad():
        err = (net(x) - m(x)).abs().max().item()
    assert err < 1e-4, f"timm and OpenCLIP disagree: {err}"
    return mapping


def gen_towers():
    out_dir = os.path.join(RESNET_FIX, "golden")
    mapping = timm_key_map()
    for name, c in TOWERS.items():
        gen = torch.Generator().manual_seed(c["seed"])
        m = tower(c).eval()
        randomize(m, gen)
        round_to_half(m)
        x = torch.randn((c["batch"], 3, c["image_size"], c["image_size"]), generator=gen).half().float()
        with torch.no_grad():
            outs = tower_outputs(m, x)
            m64 = tower(c).double().eval()
            m64.load_state_dict(m.state_dict())
            emb64 = m64(x.double())
        tensors = {"embedding": outs["embedding"], "embedding_f64": emb64}
        tensors.update({k: outs[k] for k in c["store"]})
        tensors = {k: v.contiguous() for k, v in tensors.items()}
        tensors["input"] = x.half()
        tensors.update({k: v.half() for k, v in tensors_of(m, "model.").items()})
        config = {k: v for k, v in c.items() if k not in ("seed", "store")}
        if name == "clip_rn":
            config["timm_keys"] = mapping
            config["timm_keys_config"] = TIMM_TWIN
        # One metadata entry: safetensors writes several in hash order, which would make the bytes vary.
        meta = {"config": json.dumps(config, sort_keys=True)}
        save_file(tensors, os.path.join(out_dir, f"{name}.safetensors"), metadata=meta)
        err64 = (emb64 - outs["embedding"].double()).abs().max().item()
        scale = emb64.abs().max().item()
        print(f"{name}: |f32 - f64| embedding {err64:.2e} (max |embedding| {scale:.2f})")


NAMED = {"RN50": "resnet50_clip", "RN101": "resnet101_clip", "RN50x4": "resnet50x4_clip",
         "RN50x16": "resnet50x16_clip", "RN50x64": "resnet50x64_clip"}


def gen_param_counts():
    image, text = {}, {}
    for oc_name, timm_name in NAMED.items():
        m = open_clip.create_model(oc_name)
        v = sum(p.numel() for p in m.visual.parameters())
        total = sum(p.numel() for p in m.parameters())
        tm = timm.create_model(timm_name)
        t = sum(p.numel() for p in tm.parameters())
        assert t == v, (oc_name, t, v)
        cfg = open_clip.get_model_config(oc_name)
        vc = cfg["vision_cfg"]
        image[timm_name] = {"open_clip": oc_name, "params": v, "layers": vc["layers"], "width": vc["width"],
                            "embed_dim": cfg["embed_dim"], "heads": m.visual.attnpool.num_heads,
                            "image_size": vc["image_size"]}
        text[timm_name] = {"open_clip": oc_name, "text_params": total - v, "total_params": total,
                           "text_cfg": cfg["text_cfg"], "embed_dim": cfg["embed_dim"]}
        del m, tm
    for path, obj in ((os.path.join(RESNET_FIX, "clip_param_counts.json"), image),
                      (os.path.join(CLIP_FIX, "clip_param_counts.json"), text)):
        with open(path, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.write("\n")
    print("param counts:", {k: v["params"] for k, v in image.items()})


# ---------------------------------------------------------------------------------------------------------------
# The tokenizer corpus

CRAFTED = [
    "", " ", "   \t\n  ", "a", "A", "a photo of a cat.", "A Photo Of A CAT!", "a photo of a {}.",
    "The quick brown fox jumps over the lazy dog.", "Hello, world!!!", "hello...world???", "e-mail: foo@bar.com",
    "https://example.com/path?q=1&r=2#frag", "C++ and C# and F#", "snake_case and kebab-case", "$19.99 (20% off)",
    "it's", "IT'S", "we'll", "they're", "I'm", "you've", "he'd", "y'all'd've", "'s 't 're 've 'm 'll 'd",
    "rock 'n' roll", "don't stop", "'ſ and 'S", "o'clock", "the dog's bone",
    "1234567890", "3.14159", "1,000,000", "2024-05-17", "12:30pm", "x1y2z3", "007", "\u0661\u0662\u0663 arabic digits",
    "caf\u00e9", "cafe\u0301", "na\u00efve", "\u00c5ngstr\u00f6m", "S\u00e3o Paulo", "Dvo\u0159\u00e1k", "\u0141\u00f3d\u017a",
    "\u0130stanbul", "stra\u00dfe", "STRASSE", "\u1e9e", "\u03a3\u038a\u03a3\u03a5\u03a6\u039f\u03a3", "\u1f48\u0394\u03a5\u03a3\u03a3\u0395\u038e\u03a3",
    "\u00c9cole \u00e9l\u00e9mentaire", "Cr\u00e8me br\u00fbl\u00e9e", "pi\u00f1ata", "fa\u00e7ade", "\u00e6sthetic", "\u0153uvre",
    "Z\u00fcrich", "M\u00fcnchen", "K\u00f8benhavn", "Reykjav\u00edk", "\u0219i \u021bar\u0103", "Ti\u1ebfng Vi\u1ec7t",
    "\u732b", "\u4e00\u53ea\u732b\u7684\u7167\u7247", "\u6771\u4eac\u30bf\u30ef\u30fc", "\u306d\u3053\u306e\u5199\u771f",
    "\ud55c\uad6d\uc5b4 \ubb38\uc7a5", "\u4e2d\u6587\uff0c\u6807\u70b9\u3002", "\u30ab\u30bf\u30ab\u30ca",
    "\uff76\uff80\uff76\uff85", "\uff2c\uff2f\uff35\uff24\u3000\uff2e\uff2f\uff29\uff33\uff25\uff33", "\uff15\uff10\uff05",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!", "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd", "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a", "\u1303\u1295 \u12a0\u121b\u122d\u129b", "\u10d2\u10d0\u10db\u10d0\u10e0\u10ef\u10dd\u10d1\u10d0",
    "\U0001f431", "a \U0001f431 cat", "\U0001f44d\U0001f3fd", "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "\U0001f1eb\U0001f1f7 flag", "\u2764\ufe0f", "\U0001f600\U0001f603\U0001f604\U0001f601", "\U0001f525\U0001f525\U0001f525 fire",
    "\U0001fae0 melting", "\u263a", "\u2603 snowman", "\U0001f3f3\ufe0f\u200d\U0001f308",
    "&amp;", "&lt;b&gt;", "Tom &amp; Jerry", "&amp;amp;amp;", "&amp;amp;amp;amp;", "&#39;", "&#x27;", "&eacute;",
    "&EACUTE;", "P&EACUTE;REZ", "BUNDESSTRA&SZLIG;E", "&ntilde; &Ntilde; &NTILDE; &nTILDE;", "&notit;", "&ampfoo",
    "&amp", "&copy 2024", "&#0;", "&#128;", "&#x80;", "&#150;", "&#xD800;", "&#1114112;", "&#x110000;", "&#65;&#66;",
    "&#x263a;", "&#X263A;", "&#9731;", "&nbsp;x&nbsp;", "&hellip;", "&mdash; dash &ndash;", "&quot;quoted&quot;",
    "&apos;", "&Jscr;ohn &HilbertSpace;ancock", "&checkmark;", "&nosuchentity;", "&;", "& amp;", "&#;", "&#x;",
    "a < b &amp; c", "<b>bold</b> &amp; co", "x&lt;y", "&#60;tag&#62;", "&lt;3", "AT&T", "R&D", "fish & chips",
    "line one\nline two &amp; more", "has < on line one\nthen &amp; on line two", "&amp; first\n< then",
    "&#xfffe;", "&#x1fffe;", "&#11;", "&#13;", "&#x0d;", "&#x85;", "&#x9f;", "&#99999999999999999999;",
    "\u201cquoted\u201d and \u2018single\u2019", "it\u2019s", "\u201eGerman\u201c", "\u02bcokina", "\u201b\u201f",
    "\ufb01nance \ufb02ower \ufb00 \ufb03 \ufb04 \ufb05 \ufb06", "\u0132sselmeer \u01c4 \u01c5 \u01c6 \u01c9", "\u0149",
    "tab\tseparated\tvalues", "windows\r\nline\r\nbreaks", "old\rmac", "line\u2028sep\u2029para", "next\u0085line",
    "nul\x00byte", "bell\x07 and \x1b[31mred\x1b[0m text", "\x1b[1;32mgreen\x1b[m", "del\x7fchar",
    "c1 \x80\x93\x94\x99 controls", "\x81\x8d\x8f\x90\x9d undefined c1", "\ufeffbom", "zero\u200bwidth",
    "soft\u00adhyphen", "nbsp\u00a0here", "em\u2003space", "ideographic\u3000space", "thin\u2009space",
    "\u2066isolate\u2069", "\u206aold controls\u206f", "\ufff9anno\ufffb", "\ufffc object", "\x1c\x1d\x1e\x1f seps",
    "<start_of_text>", "<end_of_text>", "<START_OF_TEXT>", "a<end_of_text>b", "x <start_of_text> y",
    "s\u00c3\u00b3", "voil\u00c3 le travail", "\u00e2\u0153\u201d No problems",  # mojibake: the documented gap
    "\u00bd \u00bc \u2153", "x\u00b2 + y\u00b3", "H\u2082O", "\u2167 \u216b", "\u2211\u222b\u221a\u221e", "\u00b0C",
    "\u2122 \u00ae \u00a9", "\u2460\u2461\u2462", "\U0001d400\U0001d401", "\u212b \u212a", "\u00b5 vs \u03bc",
    "!!!", "???", "...", "---", "***", "\u2014\u2013\u2026\u2022", "@#$%^&*()", "[]{}()<>", "\\backslash\\",
    "\"double\"", "'single'", "`backtick`", "~tilde~", "|pipe|", "a/b/c", "semi;colon", "colon:",
    "a" * 300, "ab" * 200, "supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis",
    "word " * 100, " ".join(str(i) for i in range(200)), "\U0001f431" * 60, "\u732b" * 120,
    "\u00e9" * 100, "&amp;" * 50,
]


def long_texts(rng):
    words = ("the a of photo picture cat dog car bird tree house person man woman child street city mountain "
             "river sky cloud sun night day red green blue small large old new bright dark").split()
    out = [" ".join(rng.choice(words) for _ in range(n)) for n in (60, 75, 76, 77, 80, 150, 1000)]
    out.append("".join(rng.choice("abcdefghij") for _ in range(3000)))
    return out


POOLS = [
    "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "     \t\n", "\u00e0\u00e1\u00e2\u00e4\u00e7\u00e8\u00e9\u00ea\u00eb\u00ee\u00ef\u00f1\u00f4\u00f6\u00f9\u00fb\u00fc\u00df\u0153\u00e6\u0142\u0105\u0119\u0107\u0144\u015b\u017a\u017c\u00c9\u00c0\u00d6\u00dc",
    "\u03b1\u03b2\u03b3\u03b4\u03b5\u03b6\u03b7\u03b8\u03bb\u03bc\u03c0\u03c3\u03c2\u03c9\u03a3\u03a9\u0394\u03ac\u03ad\u03ae",
    "\u0430\u0431\u0432\u0433\u0434\u0435\u0436\u0437\u0438\u043a\u043b\u043c\u043d\u043e\u043f\u0440\u0441\u0442\u0423\u0424\u0425\u042f",
    "\u732b\u72ac\u8eca\u9ce5\u6728\u5bb6\u4eba\u5c71\u5ddd\u7a7a\u96f2\u65e5\u6708\u706b\u6c34\u91d1\u571f\u5927\u5c0f\u4e2d",
    "\u3042\u3044\u3046\u3048\u304a\u304b\u304d\u304f\u30a2\u30a4\u30a6\u30a8\u30aa\u30ab\u30ad\u30af\u30fc",
    "\uac00\ub098\ub2e4\ub77c\ub9c8\ubc14\uc0ac\uc544\uc790\ucc28\uce74\ud0c0\ud30c\ud558",
    "\u0300\u0301\u0302\u0303\u0308\u030a\u0327",
    "\u201c\u201d\u2018\u2019\u2013\u2014\u2026\u2022\u00ab\u00bb",
    "\uff21\uff22\uff43\uff44\uff11\uff12\uff01\uff1f\uff08\uff09\uff71\uff72",
]
EMOJI = ["\U0001f431", "\U0001f436", "\U0001f697", "\U0001f44d\U0001f3fd", "\u2764\ufe0f", "\U0001f1ef\U0001f1f5",
         "\U0001f468\u200d\U0001f4bb", "\U0001f600", "\u2728", "\U0001f308"]
SNIPPETS = ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;", "&nbsp;", "&eacute;", "&#x263A;", "&copy", "&hellip;",
            "'s", "'ll", "<end_of_text>", " the ", " a photo of ", "\ufb01", "\u3000", "\r\n"]


def random_texts(rng, n):
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 25)):
            r = rng.random()
            if r < 0.1:
                parts.append(rng.choice(EMOJI))
            elif r < 0.2:
                parts.append(rng.choice(SNIPPETS))
            else:
                pool = rng.choice(POOLS)
                parts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 8))))
        out.append("".join(parts))
    return out


def gen_tokenizer_corpus():
    rng = random.Random(18)
    tok = SimpleTokenizer()
    candidates = [("crafted", t) for t in CRAFTED] + [("long", t) for t in long_texts(rng)]
    candidates += [("imagenet", c) for c in IMAGENET_CLASSNAMES]
    candidates += [("template", t(c)) for t, c in zip(OPENAI_IMAGENET_TEMPLATES * 3, rng.sample(IMAGENET_CLASSNAMES, 240))]
    candidates += [("random", t) for t in random_texts(rng, 400)]
    cases, excluded = [], []
    for kind, text in candidates:
        # ftfy's mojibake repair (fix_encoding) is the one cleaning step zoo-clip leaves out: strings whose
        # cleaning it changes are recorded, not tested.
        if ftfy.fix_text(text) != ftfy.fix_text(text, fix_encoding=False):
            excluded.append({"kind": kind, "text": text, "reason": "ftfy's mojibake repair (fix_encoding) changes it"})
            continue
        ids = tok([text])[0].tolist()
        while ids and ids[-1] == 0:
            ids.pop()
        cases.append({"kind": kind, "text": text, "clean": _clean_lower(text), "ids": ids})
    doc = {"generator": "scripts/gen_clip_fixtures.py",
           "reference": f"open_clip {open_clip.__version__} SimpleTokenizer (clean='lower', context 77), "
                        f"ftfy {ftfy.__version__}, Python {sys.version.split()[0]} (Unicode {unicodedata.unidata_version})",
           "ids": "the 77 ids with the zero padding after <end_of_text> removed",
           "cases": cases, "excluded": excluded}
    with open(os.path.join(CLIP_FIX, "tokenizer_corpus.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=0)
        f.write("\n")
    print(f"tokenizer corpus: {len(cases)} strings ({len(excluded)} excluded)")


# ---------------------------------------------------------------------------------------------------------------
# Whole CLIP models

TEXTS = ["a photo of a cat.", "a photo of a dog.", "", "A DIAGRAM &amp; a sketch, 100% \u732b \U0001f431",
         " ".join(["long"] * 90), "<end_of_text> early end"]
LABELS = ["cat", "dog", "red car"]
SINGLE_TEMPLATE = "a photo of a {}."


def clip_outputs(model, tok, images, prefix=""):
    """Embeddings, logits and zero-shot probabilities the way OpenCLIP computes them."""
    tokens = tok(TEXTS)
    out = {}
    with torch.no_grad():
        img = model.encode_image(images)
        txt = model.encode_text(tokens)
        scale = model.logit_scale.exp()
        out["image_embeds"] = img
        out["text_embeds"] = txt
        out["logits_per_image"] = scale * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
        for name, templates in (("single", [SINGLE_TEMPLATE]), ("ensemble", OPENAI_IMAGENET_TEMPLATES)):
            w = build_zero_shot_classifier(model, tok, LABELS, templates, num_classes_per_batch=2)
            logits = scale * F.normalize(img, dim=-1) @ w
            out[f"zeroshot_{name}_classifier"] = w.T
            out[f"zeroshot_{name}_logits"] = logits
            out[f"zeroshot_{name}_probs"] = logits.softmax(dim=-1)
    return tokens, {prefix + k: v.contiguous() for k, v in out.items()}


def make_clip(embed_dim, vision, text, quick_gelu):
    return CLIP(embed_dim=embed_dim, vision_cfg=CLIPVisionCfg(**vision), text_cfg=CLIPTextCfg(**text),
                quick_gelu=quick_gelu).eval()


def gen_tiny_clip():
    # heads = width * 32 / head_width = 2
    vision = dict(layers=[2, 1, 1, 1], width=4, head_width=64, image_size=64)
    text = dict(context_length=77, vocab_size=49408, width=8, heads=2, layers=2)
    gen = torch.Generator().manual_seed(21)
    model = make_clip(24, vision, text, quick_gelu=False)
    randomize(model, gen)
    round_to_half(model)
    images = torch.randn((2, 3, 64, 64), generator=gen).half().float()
    tok = SimpleTokenizer()
    tokens, out = clip_outputs(model, tok, images)
    quick = make_clip(24, vision, text, quick_gelu=True)
    quick.load_state_dict(model.state_dict())
    _, q = clip_outputs(quick, tok, images, prefix="quickgelu_")
    out.update(q)
    m64 = make_clip(24, vision, text, quick_gelu=False).double()
    m64.load_state_dict(model.state_dict())
    _, o64 = clip_outputs(m64, tok, images.double(), prefix="f64_")
    out.update(o64)
    tensors = {"images": images.half(), "tokens": tokens.to(torch.int64), **out}
    tensors.update({k: v.half() for k, v in tensors_of(model, "model.").items()})
    # `model_cfg` in OpenCLIP's own format (as in a repository's open_clip_config.json).
    model_cfg = {"embed_dim": 24, "quick_gelu": False, "vision_cfg": vision, "text_cfg": text}
    meta = {"config": json.dumps({"model_cfg": model_cfg, "texts": TEXTS, "labels": LABELS,
                                  "single_template": SINGLE_TEMPLATE}, sort_keys=True)}
    save_file(tensors, os.path.join(CLIP_FIX, "clip_tiny.safetensors"), metadata=meta)
    errs = {k: (out["f64_" + k].double() - out[k].double()).abs().max().item()
            for k in ("image_embeds", "text_embeds", "logits_per_image", "zeroshot_ensemble_probs")}
    print("clip_tiny: |f32 - f64|", {k: f"{v:.2e}" for k, v in errs.items()})


def gen_rn50(out_dir):
    """Full-size RN50 (OpenAI's QuickGELU config) with random weights, for the optional full-size test."""
    os.makedirs(out_dir, exist_ok=True)
    cfg = open_clip.get_model_config("RN50-quickgelu")
    model = open_clip.create_model("RN50-quickgelu").eval()
    gen = torch.Generator().manual_seed(50)
    randomize(model, gen)
    preprocess = open_clip.image_transform(224, is_train=False)
    from PIL import Image
    photo = os.path.join(ROOT, ".data", "chelsea.png")
    images = [preprocess(Image.open(photo))] if os.path.exists(photo) else []
    images.append(torch.randn((3, 224, 224), generator=gen))
    images = torch.stack(images)
    tok = SimpleTokenizer()
    tokens, out = clip_outputs_small(model, tok, images)
    m64 = open_clip.create_model("RN50-quickgelu").double().eval()
    m64.load_state_dict(model.state_dict())
    _, o64 = clip_outputs_small(m64, tok, images.double(), prefix="f64_")
    out.update(o64)
    # Each file is written under a temporary name and renamed; reference.safetensors (what the test looks for)
    # comes last, so an interrupted run leaves no half-written fixture behind.
    tmp = lambda name: os.path.join(out_dir, name + ".tmp")
    save_file({k: v.detach().float().contiguous() for k, v in model.state_dict().items()},
              tmp("open_clip_model.safetensors"))
    os.replace(tmp("open_clip_model.safetensors"), os.path.join(out_dir, "open_clip_model.safetensors"))
    with open(tmp("open_clip_config.json"), "w") as f:
        json.dump({"model_cfg": cfg, "preprocess_cfg": {"mean": list(open_clip.OPENAI_DATASET_MEAN),
                                                          "std": list(open_clip.OPENAI_DATASET_STD)}}, f, indent=1)
    os.replace(tmp("open_clip_config.json"), os.path.join(out_dir, "open_clip_config.json"))
    meta = {"config": json.dumps({"texts": TEXTS, "labels": LABELS, "single_template": SINGLE_TEMPLATE,
                                  "photo": "chelsea.png" if os.path.exists(photo) else ""}, sort_keys=True)}
    save_file({"images": images, "tokens": tokens.to(torch.int64), **out}, tmp("reference.safetensors"), metadata=meta)
    os.replace(tmp("reference.safetensors"), os.path.join(out_dir, "reference.safetensors"))
    errs = {k: (o64["f64_" + k].double() - out[k].double()).abs().max().item()
            for k in ("image_embeds", "text_embeds", "logits_per_image")}
    print("rn50: |f32 - f64|", {k: f"{v:.2e}" for k, v in errs.items()})


def clip_outputs_small(model, tok, images, prefix=""):
    """`clip_outputs` with the 7-template ensemble (the 80 templates through a full text tower are slow)."""
    tokens = tok(TEXTS)
    out = {}
    with torch.no_grad():
        img = model.encode_image(images)
        txt = model.encode_text(tokens)
        scale = model.logit_scale.exp()
        out["image_embeds"], out["text_embeds"] = img, txt
        out["logits_per_image"] = scale * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
        w = build_zero_shot_classifier(model, tok, LABELS, SIMPLE_IMAGENET_TEMPLATES, num_classes_per_batch=3)
        logits = scale * F.normalize(img, dim=-1) @ w
        out["zeroshot_simple_logits"], out["zeroshot_simple_probs"] = logits, logits.softmax(dim=-1)
    return tokens, {prefix + k: v.contiguous() for k, v in out.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rn50", help="also write the full-size RN50 fixture into this directory")
    ap.add_argument("--only-rn50", action="store_true", help="write only the RN50 fixture")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, open_clip {open_clip.__version__}, timm {timm.__version__}, "
          f"ftfy {ftfy.__version__}, numpy {np.__version__}")
    if not args.only_rn50:
        os.makedirs(CLIP_FIX, exist_ok=True)
        gen_towers()
        gen_param_counts()
        gen_tokenizer_corpus()
        gen_tiny_clip()
    if args.rn50:
        gen_rn50(args.rn50)


if __name__ == "__main__":
    main()
