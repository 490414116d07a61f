"""The three vitx families as tiny models, for tests that every family must pass.

``@pytest.mark.parametrize("family", FAMILIES)`` and build with ``tiny_model(family)``: the standard ViT,
the ViT with the landmark (Nystrom) encoder, and CrossViT, each small enough for a unit test (32x32 images,
no dropout, so train and eval mode compute the same function).
"""

import torch

from helpers import tiny_cross_vit_kwargs, tiny_vit_kwargs
from configuration_vitx import CrossVitxConfig, VitxConfig
from modeling_vitx import CrossVitxForImageClassification, CrossVitxModel, VitxForImageClassification, VitxModel

FAMILIES = ("vit", "landmark", "crossvit")

# Overrides giving each family one block per stream (CrossViT: one multi-scale block, one cross-attention round),
# for tests whose cost grows with every op traced (torch.compile, export) while one block has every kind of op.
ONE_BLOCK = {"vit": {"depth": 1}, "landmark": {"depth": 1},
             "crossvit": {"depth": 1, "lg_enc_depth": 1, "cross_attn_depth": 1}}


def tiny_config(family, **overrides):
    """The config of ``family``'s tiny model; ``overrides`` replace its values."""
    if family == "vit":
        return VitxConfig(**tiny_vit_kwargs(**overrides))
    if family == "landmark":
        return VitxConfig(**tiny_vit_kwargs(**{"encoder": "landmark", "encoder_kwargs": {"num_landmarks": 8},
                                               **overrides}))
    if family == "crossvit":
        return CrossVitxConfig(**tiny_cross_vit_kwargs(**{"dropout": 0.0, "emb_dropout": 0.0, **overrides}))
    raise ValueError(f"`family` must be one of {FAMILIES}, got {family!r}.")


def model_class(family, head=True):
    """``family``'s classifier class, or its bare model class with ``head=False``."""
    if family == "crossvit":
        return CrossVitxForImageClassification if head else CrossVitxModel
    return VitxForImageClassification if head else VitxModel


def tiny_model(family, head=True, **overrides):
    """``family``'s tiny classifier (or bare model with ``head=False``), freshly initialized, in eval mode."""
    return model_class(family, head)(tiny_config(family, **overrides)).eval()


def tiny_pixels(family, batch=2):
    """A random batch of images of the size ``family``'s tiny model expects."""
    size = tiny_config(family).image_size
    return torch.randn(batch, 3, size, size)
