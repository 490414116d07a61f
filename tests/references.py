"""Tiny models of the reference implementations vitx is compared with and converts from (transformers' ViT,
timm's VisionTransformer, nystrom-attention's Nystromformer in vit-pytorch's efficient ViT), for the parity
tests and the converter tests alike."""

import torch
from nystrom_attention import Nystromformer
from timm.models.vision_transformer import VisionTransformer
from transformers import ViTConfig, ViTForImageClassification
from vit_pytorch.efficient import ViT as EfficientViT

import convert_vit_pytorch


def randomized(model):
    """Noise on every parameter, so LayerNorm scales, biases and the CLS token are not their initial constants."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return model.eval()


def hf_vit(model_class=ViTForImageClassification, **overrides):
    """A tiny transformers ViT (explicit-softmax attention, so its maps can be returned), randomized."""
    kwargs = dict(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, num_labels=10, attn_implementation="eager")
    kwargs.update(overrides)
    return randomized(model_class(ViTConfig(**kwargs)))


def timm_vit(**overrides):
    """A tiny timm VisionTransformer, randomized."""
    kwargs = dict(img_size=32, patch_size=4, embed_dim=32, depth=2, num_heads=4, num_classes=10)
    kwargs.update(overrides)
    return randomized(VisionTransformer(**kwargs))


def landmark_pair(residual_conv_kernel=5, num_landmarks=16, depth=2):
    """A Nystromformer, vit-pytorch's efficient ViT around it, and that ViT converted to vitx (the landmark
    encoder); returns ``(nystromformer, efficient ViT, vitx model, converter kwargs)``."""
    reference = Nystromformer(dim=32, depth=depth, heads=4, dim_head=8, num_landmarks=num_landmarks,
                              attn_values_residual=bool(residual_conv_kernel),
                              attn_values_residual_conv_kernel=residual_conv_kernel or 33).eval()
    kwargs = dict(image_size=32, patch_size=4, num_classes=10, dim=32,
                  transformer=dict(depth=depth, heads=4, dim_head=8, num_landmarks=num_landmarks,
                                   attn_values_residual=bool(residual_conv_kernel),
                                   attn_values_residual_conv_kernel=residual_conv_kernel or 33))
    vit = EfficientViT(image_size=32, patch_size=4, num_classes=10, dim=32, transformer=reference).eval()
    model = convert_vit_pytorch.convert("efficient_nystrom", vit.state_dict(), kwargs)
    return reference, vit, model, kwargs
