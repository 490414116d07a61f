"""Convert a transformers ViT or a timm VisionTransformer checkpoint into a vitx Hugging Face folder.

    python scripts/convert_vit.py --source google/vit-base-patch16-224 --output vit-base-patch16-224
    python scripts/convert_vit.py --timm-model vit_base_patch16_224.augreg2_in21k_ft_in1k \\
        --checkpoint model.safetensors --output vit-base-patch16-224

``--source`` is a local folder or Hub id of a transformers ``ViTModel`` / ``ViTForImageClassification``,
loaded through transformers itself, so checkpoints with old and new weight names both load.
``--timm-model`` names the timm architecture (with its pretrained tag, which sets mean and std) whose
``state_dict`` ``--checkpoint`` holds: safetensors, or a ``.pth`` loaded with ``weights_only=True``;
``--timm-kwargs`` passes extra ``timm.create_model`` arguments as JSON (e.g. ``'{"img_size": 384}'``).

The output folder holds ``model.safetensors``, ``config.json`` (label names carried over),
``preprocessor_config.json`` and the remote-code files, ready for ``scripts/train.py --model_name_or_path``
and ``pipeline("image-classification")``. The image processor is the transformers source's own (a source
folder without one gets, with a warning, a ``ViTImageProcessor`` with transformers' ViT defaults at the
model's size), or for timm a ``ViTImageProcessor`` with the model's mean, std, interpolation and size.

The classic ViT is vitx with ``patch_norm=False`` (a convolutional patch projection), the source's
``qkv_bias``, ``layer_norm_eps`` and head width: the converted model computes the same logits, hidden
states and attention maps. A feature vitx cannot express (a distillation token, layer scale, register
tokens, another pooling, qk norm ...) stops the conversion with a ``ValueError`` naming it. Dropout
rates carry over; vitx's feed-forward also drops after the GELU (as timm does, HF's ViT does not).
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoConfig, HfArgumentParser, ViTForImageClassification, ViTModel
from transformers.image_utils import PILImageResampling

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from configuration_vitx import VitxConfig, _to_pair  # noqa: E402
from modeling_vitx import VitxForImageClassification, VitxModel  # noqa: E402
from vitx_common import (default_image_processor, load_image_processor, prefixed, save_folder,  # noqa: E402
                         vitx_layer_weights)

POOLER = ("a pooler (dense + tanh on the CLS token: ViTModel's pooler_output; vitx's pooler_output is the normed "
          "CLS token, and ViTForImageClassification never uses the pooler): pass --drop-pooler to convert without it")

# the classic ViT's pieces -> vitx weights


def refuse_unsupported(source, features):
    """Raise a ``ValueError`` naming every feature of ``source`` that vitx cannot express."""
    if features:
        raise ValueError(f"{source} has features vitx cannot express, so it was not converted: "
                         + "; ".join(dict.fromkeys(features)))


def _params(module):
    """``module``'s weight and bias.

    A missing bias becomes zeros and a missing LayerNorm scale ones: the same function as leaving them out.
    """
    weight = module.weight if module.weight is not None else torch.ones(module.normalized_shape)
    bias = module.bias if module.bias is not None else torch.zeros(weight.shape[0])
    return {"weight": weight, "bias": bias}


def _qkv_params(*projections):
    """The query, key and value projections (or one fused projection) stacked as vitx's ``to_qkv``.

    Without biases ``to_qkv`` has none (``qkv_bias=False``), so none is made up.
    """
    params = {"weight": torch.cat([p.weight for p in projections])}
    if projections[0].bias is not None:
        params["bias"] = torch.cat([p.bias for p in projections])
    return params


def _size(pair):
    """``(224, 224)`` -> ``224``; a rectangular pair stays a pair."""
    height, width = pair
    return height if height == width else [height, width]


def _embedding_weights(projection, cls_token, position_embeddings):
    """The patch convolution, CLS token (or ``None``) and position table -> ``VitxEmbeddings`` weights."""
    weights = {**prefixed("embeddings.patch_embeddings.projection", _params(projection)),
               "embeddings.position_embeddings": position_embeddings}
    if cls_token is not None:
        weights["embeddings.cls_token"] = cls_token
    return weights


def _build(config, weights, classifier):
    """A vitx model holding exactly ``weights`` (base-model names): a classifier if ``classifier`` is a Linear."""
    if classifier is None:
        model = VitxModel(config)
    else:
        model = VitxForImageClassification(config)
        weights = {**prefixed("vitx", weights), **prefixed("classifier", _params(classifier))}
    model.load_state_dict(weights, strict=True)
    return model.eval()


# transformers ViT


def _submodule(module, *paths):
    """The first of ``paths`` that ``module`` has.

    transformers 5 renamed ViT's submodules (``layers.0.attention.q_proj`` was
    ``encoder.layer.0.attention.attention.query``); whichever version loaded the model, both read.
    """
    for path in paths:
        try:
            return module.get_submodule(path)
        except AttributeError:
            continue
    raise ValueError(f"{type(module).__name__} has none of {list(paths)}; is it a transformers ViT?")


def _hf_qkv(layer):
    """A transformers ``ViTLayer``'s query, key and value projections."""
    return tuple(_submodule(layer, f"attention.{new}", f"attention.attention.{old}")
                 for new, old in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")))


def _hf_unsupported(model, drop_pooler):
    config, vit = model.config, getattr(model, "vit", model)
    features = []
    if config.hidden_act != "gelu":
        features.append(f"activation hidden_act={config.hidden_act!r} (vitx uses the exact GELU, 'gelu')")
    if config.hidden_dropout_prob != config.attention_probs_dropout_prob:
        features.append(f"hidden_dropout_prob={config.hidden_dropout_prob} differing from "
                        f"attention_probs_dropout_prob={config.attention_probs_dropout_prob} (vitx has one `dropout`)")
    if vit.embeddings.mask_token is not None:
        features.append("a mask token (masked image modeling)")
    if getattr(vit, "pooler", None) is not None and not drop_pooler:
        features.append(POOLER)
    return features


def convert_hf_vit(model, drop_pooler=False):
    """A transformers ``ViTModel`` / ``ViTForImageClassification`` -> the same network as ``VitxModel`` /
    ``VitxForImageClassification`` (in eval mode). ``drop_pooler`` converts a ``ViTModel`` without its pooler."""
    if not isinstance(model, (ViTModel, ViTForImageClassification)):
        raise ValueError(f"expected a transformers ViTModel or ViTForImageClassification, got {type(model).__name__}")
    refuse_unsupported(type(model).__name__, _hf_unsupported(model, drop_pooler))
    source, vit = model.config, getattr(model, "vit", model)
    layers = _submodule(vit, "layers", "encoder.layer")
    weights = _embedding_weights(vit.embeddings.patch_embeddings.projection, vit.embeddings.cls_token,
                                 vit.embeddings.position_embeddings)
    for i, layer in enumerate(layers):
        weights.update(vitx_layer_weights(
            f"encoder.layers.{i}", attention_norm=_params(layer.layernorm_before), to_qkv=_qkv_params(*_hf_qkv(layer)),
            to_out=_params(_submodule(layer, "attention.o_proj", "attention.output.dense")),
            feed_forward_norm=_params(layer.layernorm_after),
            fc1=_params(_submodule(layer, "mlp.fc1", "intermediate.dense")),
            fc2=_params(_submodule(layer, "mlp.fc2", "output.dense"))))
    weights.update(prefixed("encoder.norm", _params(vit.layernorm)))
    config = VitxConfig(
        image_size=_size(_to_pair(source.image_size)), patch_size=_size(_to_pair(source.patch_size)),
        dim=source.hidden_size, depth=source.num_hidden_layers, heads=source.num_attention_heads,
        mlp_dim=source.intermediate_size, channels=source.num_channels, dropout=source.hidden_dropout_prob,
        emb_dropout=source.hidden_dropout_prob, dim_head=_hf_qkv(layers[0])[0].out_features // source.num_attention_heads,
        patch_norm=False, qkv_bias=source.qkv_bias, layer_norm_eps=source.layer_norm_eps,
        initializer_range=source.initializer_range, id2label=source.id2label, problem_type=source.problem_type,
    )
    classifier = getattr(model, "classifier", None)
    return _build(config, weights, classifier if isinstance(classifier, nn.Linear) else None)


def load_hf_vit(source, drop_pooler=False):
    """Load a transformers ViT checkpoint (local folder or Hub id) through transformers, refusing partial loads.

    A ``ViTForImageClassification`` checkpoint loads as one; anything else of model type ``vit`` as a
    ``ViTModel``. Weights the checkpoint lacks (they would be random) or holds beyond the model raise a
    ``ValueError``; so does a pooler, unless ``drop_pooler``.
    """
    config = AutoConfig.from_pretrained(source)
    if config.model_type != "vit":
        raise ValueError(f"{source} has model_type {config.model_type!r}; only transformers ViT ('vit') checkpoints "
                         f"convert (DeiT's distilled variant, for one, adds a distillation token vitx cannot express)")
    architectures = config.architectures or ["ViTModel"]
    if "ViTForImageClassification" in architectures:
        model_class, kwargs = ViTForImageClassification, {}
    elif "ViTModel" in architectures:
        # built without a pooler, a pooler in the checkpoint shows up as unexpected weights
        model_class, kwargs = ViTModel, {"add_pooling_layer": False}
    else:
        raise ValueError(f"{source} is a {architectures}; supported: ViTModel, ViTForImageClassification")
    model, info = model_class.from_pretrained(source, output_loading_info=True, **kwargs)
    unexpected = set(info["unexpected_keys"])
    pooler = {key for key in unexpected if "pooler." in key}
    if pooler and not drop_pooler:
        refuse_unsupported(source, [POOLER])
    missing, unexpected = sorted(info["missing_keys"]), sorted(unexpected - pooler)
    if missing or unexpected:
        raise ValueError(f"{source} does not hold exactly a transformers {model_class.__name__}: "
                         f"missing {missing}, unexpected {unexpected}")
    return model.eval()


# timm VisionTransformer (timm is an optional extra, so it is imported where it is used)


def _timm_pooling(model):
    """vitx's ``pool`` for the timm model's pooling, or the feature that vitx cannot express."""
    if model.attn_pool is not None:
        return None, f"attention pooling (global_pool={model.global_pool!r})"
    if not isinstance(model.fc_norm, nn.Identity):
        return None, "fc_norm (a LayerNorm after pooling)"
    if model.global_pool == "token":
        return "cls", None
    if model.global_pool == "avg" and model.cls_token is None:  # the mean of all (normed) tokens: vitx's "mean"
        return "mean", None
    if model.cls_token is None:
        return None, f"no class token with global_pool={model.global_pool!r}"
    return None, f"global_pool={model.global_pool!r} (vitx pools the class token)"


def _timm_block_features(block):
    from timm.layers import Attention, Mlp
    from timm.layers.activations import GELU
    from timm.models.vision_transformer import Block

    if type(block) is not Block:
        return [f"block type {type(block).__name__}"]
    attn, mlp = block.attn, block.mlp
    if type(attn) is not Attention:
        return [f"attention type {type(attn).__name__}"]
    if type(mlp) is not Mlp:
        return [f"MLP type {type(mlp).__name__}"]
    features = []
    if not (isinstance(block.ls1, nn.Identity) and isinstance(block.ls2, nn.Identity)):
        features.append("layer scale (init_values)")
    if not (isinstance(block.drop_path1, nn.Identity) and isinstance(block.drop_path2, nn.Identity)):
        features.append("stochastic depth (drop_path_rate)")
    if not (isinstance(attn.q_norm, nn.Identity) and isinstance(attn.k_norm, nn.Identity)):
        features.append("qk norm (qk_norm)")
    if not isinstance(attn.norm, nn.Identity):
        features.append("a norm before the attention projection (scale_attn_norm)")
    if getattr(attn, "gate", None) is not None:
        features.append("gated attention")
    if not isinstance(mlp.norm, nn.Identity):
        features.append("a norm inside the MLP (scale_mlp_norm)")
    if not (type(mlp.act) is GELU or (type(mlp.act) is nn.GELU and mlp.act.approximate == "none")):
        features.append(f"activation {mlp.act!r} (vitx uses the exact GELU)")
    if len({attn.attn_drop.p, attn.proj_drop.p, mlp.drop1.p, mlp.drop2.p}) > 1:
        features.append("different attention and projection dropout rates (vitx has one `dropout`)")
    for norm in (block.norm1, block.norm2):
        if not isinstance(norm, nn.LayerNorm):
            features.append(f"norm layer {type(norm).__name__} (vitx uses LayerNorm)")
    return features


def _timm_unsupported(model):
    from timm.layers import PatchEmbed

    features = []
    if getattr(model, "dist_token", None) is not None:
        features.append("a distillation token")
    if model.reg_token is not None:
        features.append(f"{model.num_reg_tokens} register tokens")
    features.append(_timm_pooling(model)[1])
    if model.pos_embed is None:
        features.append("no position embedding")
    if type(model.patch_embed) is not PatchEmbed:
        features.append(f"patch embedding {type(model.patch_embed).__name__}")
    elif not isinstance(model.patch_embed.norm, nn.Identity):
        features.append("a norm in the patch embedding")
    if not isinstance(model.norm_pre, nn.Identity):
        features.append("a norm before the blocks (pre_norm)")
    if isinstance(model.norm, nn.Identity) and isinstance(model.fc_norm, nn.Identity):
        features.append("no final norm (final_norm=False)")
    elif not isinstance(model.norm, (nn.LayerNorm, nn.Identity)):
        features.append(f"final norm {type(model.norm).__name__} (vitx uses LayerNorm)")
    if not isinstance(model.patch_drop, nn.Identity):
        features.append("patch dropout (patch_drop_rate)")
    if model.head_drop.p:
        features.append("dropout before the head (drop_rate)")
    for block in model.blocks:
        features.extend(_timm_block_features(block))
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    if len({m.eps for m in norms}) > 1:
        features.append(f"LayerNorms with different eps {sorted({m.eps for m in norms})} (vitx has one layer_norm_eps)")
    return [feature for feature in features if feature]


def timm_label_names(model):
    """ImageNet class descriptions when timm knows the model's label set and its head matches, else ``None``."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(model)
    if subset is None:
        return None
    info = ImageNetInfo(subset)
    if info.num_classes() != model.num_classes:
        return None
    return {index: info.index_to_description(index) for index in range(model.num_classes)}


def convert_timm_vit(model):
    """A timm ``VisionTransformer`` -> the same network as ``VitxForImageClassification`` (``VitxModel`` if headless).

    timm's ``no_embed_class`` (no position for the class token) converts to a zero position for it.
    """
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(model, VisionTransformer):
        raise ValueError(f"expected a timm VisionTransformer, got {type(model).__name__}")
    refuse_unsupported(type(model).__name__, _timm_unsupported(model))
    dim, pool = model.embed_dim, _timm_pooling(model)[0]
    positions = model.pos_embed
    if model.no_embed_class and model.cls_token is not None:
        positions = torch.cat((positions.new_zeros(1, 1, dim), positions), dim=1)
    weights = _embedding_weights(model.patch_embed.proj, model.cls_token, positions)
    for i, block in enumerate(model.blocks):
        weights.update(vitx_layer_weights(
            f"encoder.layers.{i}", attention_norm=_params(block.norm1), to_qkv=_qkv_params(block.attn.qkv),
            to_out=_params(block.attn.proj), feed_forward_norm=_params(block.norm2), fc1=_params(block.mlp.fc1),
            fc2=_params(block.mlp.fc2)))
    weights.update(prefixed("encoder.norm", _params(model.norm)))
    first = model.blocks[0]
    head = model.head if isinstance(model.head, nn.Linear) else None
    labels = {}
    if head is not None:
        names = timm_label_names(model)
        labels = {"id2label": names} if names else {"num_classes": head.out_features}
    config = VitxConfig(
        image_size=_size(model.patch_embed.img_size), patch_size=_size(model.patch_embed.patch_size),
        dim=dim, depth=len(model.blocks), heads=first.attn.num_heads, mlp_dim=first.mlp.fc1.out_features,
        channels=model.patch_embed.proj.in_channels, dropout=first.attn.attn_drop.p, emb_dropout=model.pos_drop.p,
        pool=pool, dim_head=first.attn.head_dim, patch_norm=False, qkv_bias=first.attn.qkv.bias is not None,
        layer_norm_eps=model.norm.eps, **labels,
    )
    return _build(config, weights, head)


def load_checkpoint(path):
    """A state dict from safetensors, or from ``torch.load(..., weights_only=True)``."""
    if str(path).endswith(".safetensors"):
        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def load_timm_vit(name, checkpoint, **kwargs):
    """``timm.create_model(name, **kwargs)`` (no download) holding exactly the state dict in ``checkpoint``.

    ``num_classes`` defaults to the checkpoint's head (0 without one).
    """
    import timm

    state_dict = load_checkpoint(checkpoint)
    if "num_classes" not in kwargs:
        kwargs["num_classes"] = state_dict["head.weight"].shape[0] if "head.weight" in state_dict else 0
    model = timm.create_model(name, pretrained=False, **kwargs)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def timm_image_processor(model):
    """A ``ViTImageProcessor`` with the timm model's mean, std and interpolation, resizing to its image size."""
    from timm.data import resolve_model_data_config

    data = resolve_model_data_config(model)
    return default_image_processor(model.patch_embed.img_size, model.patch_embed.proj.in_channels,
                                   image_mean=data["mean"], image_std=data["std"],
                                   resample=PILImageResampling[data["interpolation"].upper()])


# command line


@dataclass
class ConvertArguments:
    """Where the checkpoint comes from and where the vitx folder goes."""

    output: str = field(metadata={"help": "folder to write the vitx model to"})
    source: Optional[str] = field(default=None, metadata={
        "help": "local folder or Hub id of a transformers ViTModel / ViTForImageClassification"})
    timm_model: Optional[str] = field(default=None, metadata={
        "help": "timm model name, e.g. vit_base_patch16_224.augreg2_in21k_ft_in1k"})
    checkpoint: Optional[str] = field(default=None, metadata={
        "help": "the timm model's state dict (.safetensors, or .pth loaded with weights_only=True)"})
    timm_kwargs: Optional[str] = field(default=None, metadata={
        "help": "JSON of extra timm.create_model arguments, e.g. '{\"img_size\": 384}'"})
    drop_pooler: bool = field(default=False, metadata={
        "help": "convert a ViTModel checkpoint without its pooler (dense + tanh), which vitx cannot express"})


def convert(args):
    """The converted vitx model and its ``ViTImageProcessor`` for ``ConvertArguments``."""
    if (args.source is None) == (args.timm_model is None):
        raise ValueError("pass exactly one of --source (transformers ViT) and --timm-model (timm VisionTransformer)")
    if args.source is not None:
        model = convert_hf_vit(load_hf_vit(args.source, args.drop_pooler), drop_pooler=args.drop_pooler)
        return model, load_image_processor(args.source, model.config)
    if args.checkpoint is None:
        raise ValueError(f"--timm-model {args.timm_model!r} needs --checkpoint, the model's state dict")
    timm_model = load_timm_vit(args.timm_model, args.checkpoint, **json.loads(args.timm_kwargs or "{}"))
    return convert_timm_vit(timm_model), timm_image_processor(timm_model)


def main(argv=None):
    """Parse the command line, convert and write the folder."""
    (args,) = HfArgumentParser(ConvertArguments, description=__doc__).parse_args_into_dataclasses(argv)
    model, image_processor = convert(args)
    save_folder(args.output, model, image_processor)
    return model


if __name__ == "__main__":
    main()
