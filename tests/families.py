"""The model families every shared test runs on, as tiny models: one entry of ``TABLE`` per family or encoder.

A new family or encoder joins every shared test by adding one entry: how its tiny config is made, its model
classes, and what it can do. Shared tests parametrize over the names whose entries have what they test:

- ``FAMILIES``: vitx's own blocks under a classification head (the standard ViT, the ViT with the landmark
  (Nystrom) encoder, CrossViT): hooks, PEFT, offload, compile, export, attention implementations, outputs.
- ``CLASSIFIERS``: every image classifier, other encoders included (x-transformers, a user's own module):
  losses, output tuples, dropout, the Trainer.
- ``MODELS``: every model vitx saves, the masked autoencoder (MAE) pretraining and the semantic segmentation
  models included: save/load, Auto classes, remote code, bfloat16.
- ``BUILT_OF_BLOCKS``: every model built of vitx blocks (``VitxLayer``), whatever its head (``FAMILIES``, the
  MAE pretraining and the segmentation models): activation checkpointing, offload, hooks, PEFT, export.

Each tiny model is small enough for a unit test (32x32 images, 2 blocks per stream) and has no dropout, so train
and eval mode compute the same function.
"""

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from configuration_vitx import CrossVitxConfig, VitxConfig
from helpers import tiny_cross_vit_kwargs, tiny_vit_kwargs
from modeling_vitx import (CrossVitxForImageClassification, CrossVitxModel, VitxForImageClassification,
                           VitxForPreTraining, VitxForSemanticSegmentation, VitxModel)
from user_encoders import Mixer


@dataclass(frozen=True)
class Family:
    """One family's tiny model and what it can do."""

    config: Callable  # (**overrides) -> the tiny config
    head: type  # the model with a task head: a classifier, or the MAE pretraining model
    base: type  # the bare model, which the head wraps as ``.vitx``
    auto: str = "AutoModelForImageClassification"  # the Auto class that loads ``head``
    encoder: Optional[Callable] = None  # (config) -> the encoder module handed to the model (`encoder_module=`)
    blocks: bool = True  # built of vitx blocks (``VitxLayer``): activation checkpointing reaches them
    maps: bool = True  # serves ``output_attentions`` and ``output_hidden_states``
    resizes: bool = True  # runs at other image sizes with ``interpolate_pos_encoding=True``
    one_block: dict = field(default_factory=lambda: {"depth": 1})  # overrides leaving one block per stream


def _vit(**options):
    return lambda **overrides: VitxConfig(**tiny_vit_kwargs(**{**options, **overrides}))


# MAE's decoder: one block, narrower than the encoder.
MAE_DECODER = dict(decoder_dim=16, decoder_depth=1, decoder_heads=2, decoder_dim_head=8)

TABLE = {
    "vit": Family(_vit(), VitxForImageClassification, VitxModel),
    "landmark": Family(_vit(encoder="landmark", encoder_kwargs={"num_landmarks": 8}), VitxForImageClassification,
                       VitxModel),
    # CrossViT: one multi-scale block, one cross-attention round, for tests whose cost grows with every op traced
    "crossvit": Family(lambda **overrides: CrossVitxConfig(**tiny_cross_vit_kwargs(
        **{"dropout": 0.0, "emb_dropout": 0.0, **overrides})), CrossVitxForImageClassification, CrossVitxModel,
        one_block={"depth": 1, "lg_enc_depth": 1, "cross_attn_depth": 1}),
    "x-transformers": Family(_vit(encoder="x-transformers", encoder_kwargs={"ff_glu": True, "residual_attn": True}),
                             VitxForImageClassification, VitxModel, blocks=False),
    # a user's own module (tests/user_encoders.py): tokens in, tokens out, a fixed number of tokens
    "module": Family(_vit(), VitxForImageClassification, VitxModel, blocks=False, maps=False, resizes=False,
                     encoder=lambda config: Mixer(dim=config.dim, tokens=config.num_patches + 1)),
    "mae": Family(_vit(**MAE_DECODER), VitxForPreTraining, VitxModel, auto="AutoModelForPreTraining", resizes=False),
    # rectangular images (32x48 in 4x8 patches) and the landmark encoder, whose head norm the decoder reads
    "segmentation": Family(_vit(image_size=(32, 48), patch_size=(4, 8), encoder="landmark",
                                encoder_kwargs={"num_landmarks": 8}), VitxForSemanticSegmentation, VitxModel,
                           auto="AutoModelForSemanticSegmentation"),
}


def families(**wanted):
    """The names of the entries whose fields have the ``wanted`` values, in table order."""
    return tuple(name for name, family in TABLE.items()
                 if all(getattr(family, key) == value for key, value in wanted.items()))


CLASSIFIERS = families(auto="AutoModelForImageClassification")
FAMILIES = tuple(name for name in CLASSIFIERS if TABLE[name].blocks)
BUILT_OF_BLOCKS = families(blocks=True)  # FAMILIES, the MAE pretraining and the segmentation models
MODELS = tuple(TABLE)

# Overrides giving each family one block per stream, for tests whose cost grows with every op traced
# (torch.compile, export) while one block has every kind of op.
ONE_BLOCK = {name: family.one_block for name, family in TABLE.items()}


def tiny_config(family, **overrides):
    """The config of ``family``'s tiny model; ``overrides`` replace its values."""
    if family not in TABLE:
        raise ValueError(f"`family` must be one of {MODELS}, got {family!r}.")
    return TABLE[family].config(**overrides)


def model_class(family, head=True):
    """``family``'s model class with its task head, or its bare model class with ``head=False``."""
    return TABLE[family].head if head else TABLE[family].base


def encoder_kwargs(family, config=None):
    """What ``family``'s models take beside a config, built or loaded: its encoder module, if it has one, as
    ``encoder_module``."""
    encoder = TABLE[family].encoder
    return {} if encoder is None else {"encoder_module": encoder(config or tiny_config(family))}


def tiny_model(family, head=True, **overrides):
    """``family``'s tiny model with its task head (or bare, with ``head=False``), freshly initialized, in eval
    mode."""
    config = tiny_config(family, **overrides)
    return model_class(family, head)(config, **encoder_kwargs(family, config)).eval()


def load(family, folder, head=True, **kwargs):
    """``family``'s model class ``from_pretrained(folder, **kwargs)``, handed the encoder module it needs."""
    return model_class(family, head).from_pretrained(folder, **encoder_kwargs(family), **kwargs)


def tiny_pixels(family, batch=2):
    """A random batch of images of the size ``family``'s tiny model expects."""
    size = tiny_config(family).image_size
    height, width = (size, size) if isinstance(size, int) else size
    return torch.randn(batch, 3, height, width)


def tiny_inputs(family, batch=2):
    """A random batch ``family``'s model with its head computes a loss on: pixels and class ids (per image, or per
    pixel for segmentation, some of them the ignored 255), or (MAE) pixels and the masking noise, so that every
    call masks the same patches."""
    pixels, config = tiny_pixels(family, batch), tiny_config(family)
    if TABLE[family].auto == "AutoModelForPreTraining":
        return {"pixel_values": pixels, "noise": torch.rand(batch, config.num_patches)}
    if TABLE[family].auto == "AutoModelForSemanticSegmentation":
        labels = torch.randint(0, config.num_labels, (batch, *pixels.shape[-2:]))
        return {"pixel_values": pixels, "labels": labels.masked_fill(torch.rand(labels.shape) < 0.1, 255)}
    return {"pixel_values": pixels, "labels": torch.arange(batch) % config.num_labels}
