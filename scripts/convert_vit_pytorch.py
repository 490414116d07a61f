"""Convert a vit-pytorch checkpoint into a vitx Hugging Face folder.

    python scripts/convert_vit_pytorch.py --model vit --kwargs KWARGS.json \
        --checkpoint STATE_DICT.pt --output DIR

``--model`` names the vit-pytorch class: ``vit`` (``vit_pytorch.vit.ViT``), ``cross_vit``
(``vit_pytorch.cross_vit.CrossViT``) or ``efficient_nystrom`` (``vit_pytorch.efficient.ViT``
wrapping a ``nystrom_attention.Nystromformer``; KWARGS.json then holds the ViT's arguments plus
``"transformer"``: the Nystromformer's). ``KWARGS.json`` holds the keyword arguments the vit-pytorch model was built with;
``STATE_DICT.pt`` its ``state_dict()`` saved with ``torch.save`` (loaded here with
``weights_only=True``). The output folder holds safetensors weights, ``config.json``,
``preprocessor_config.json`` and the remote-code files, so it loads with
``AutoModelForImageClassification`` and runs in ``pipeline("image-classification")``.

vit-pytorch has no preprocessing of its own; its examples feed torchvision's ``Resize`` + ``ToTensor``:
pixels scaled to [0, 1], not normalized. So the image processor (a ``ViTImageProcessor``) resizes to
the model's ``image_size`` (bilinear), converts to RGB (three-channel models) and rescales to [0, 1]
with mean 0 and std 1. A model trained on normalized inputs names its normalization with
``--image-mean`` / ``--image-std`` (one number, or one per channel), e.g. ImageNet's
``--image-mean 0.485 0.456 0.406 --image-std 0.229 0.224 0.225``.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from configuration_vitx import CrossVitxConfig, VitxConfig  # noqa: E402
from modeling_vitx import CrossVitxForImageClassification, VitxForImageClassification  # noqa: E402
from vitx_common import default_image_processor, prefixed, save_folder, vitx_layer_weights  # noqa: E402

VIT_KWARGS = ("image_size", "patch_size", "num_classes", "dim", "depth", "heads", "mlp_dim", "pool", "channels",
              "dim_head", "dropout", "emb_dropout")
CROSS_VIT_KWARGS = ("image_size", "num_classes", "depth", "sm_dim", "sm_patch_size", "sm_enc_depth", "sm_enc_heads",
                    "sm_enc_mlp_dim", "sm_enc_dim_head", "lg_dim", "lg_patch_size", "lg_enc_depth", "lg_enc_heads",
                    "lg_enc_mlp_dim", "lg_enc_dim_head", "cross_attn_depth", "cross_attn_heads", "cross_attn_dim_head",
                    "dropout", "emb_dropout", "channels")


def _config(config_class, kwargs, allowed, class_name):
    """``config_class(**kwargs)``, refusing kwargs the vit-pytorch class ``class_name`` does not take."""
    unknown = set(kwargs) - set(allowed)
    if unknown:
        raise ValueError(f"unknown vit-pytorch {class_name} kwargs {sorted(unknown)}; allowed: {list(allowed)}")
    return config_class(**kwargs)


def _take(state_dict, key):
    if key not in state_dict:
        raise KeyError(f"checkpoint has no `{key}`; is it a state dict of the model named by --model?")
    return state_dict.pop(key)


def _take_params(state_dict, source, names=("weight", "bias")):
    """The parameters ``names`` of the module at ``source``, taken out of ``state_dict``."""
    return {name: _take(state_dict, f"{source}.{name}") for name in names}


def convert_params(state_dict, source, target):
    """A module's weight and bias (an ``nn.Linear``, an ``nn.LayerNorm``), renamed."""
    return prefixed(target, _take_params(state_dict, source))


def attention_parts(state_dict, source, dim):
    """vit-pytorch ``Attention`` -> ``VitxAttention``'s parts; a missing ``to_out`` (heads == 1 and dim_head == dim)
    is the identity."""
    attention_norm = _take_params(state_dict, f"{source}.norm")
    if f"{source}.to_qkv.weight" in state_dict:
        to_qkv = _take_params(state_dict, f"{source}.to_qkv", ("weight",))
    else:  # cross_vit.py splits the projection into to_q and to_kv
        to_qkv = {"weight": torch.cat((_take(state_dict, f"{source}.to_q.weight"),
                                       _take(state_dict, f"{source}.to_kv.weight")))}
    if f"{source}.to_out.0.weight" in state_dict:
        to_out = _take_params(state_dict, f"{source}.to_out.0")
    else:
        to_out = {"weight": torch.eye(dim), "bias": torch.zeros(dim)}
    return dict(attention_norm=attention_norm, to_qkv=to_qkv, to_out=to_out)


def feed_forward_parts(state_dict, source):
    """vit-pytorch ``FeedForward`` (``net``: LayerNorm, Linear, GELU, Dropout, Linear, Dropout) -> ``VitxFeedForward``'s
    parts."""
    return dict(feed_forward_norm=_take_params(state_dict, f"{source}.net.0"),
                fc1=_take_params(state_dict, f"{source}.net.1"), fc2=_take_params(state_dict, f"{source}.net.4"))


def convert_transformer(state_dict, source, target, depth, dim):
    """vit-pytorch ``Transformer`` (layers of [Attention, FeedForward], final norm) -> ``VitxEncoder``."""
    out = {}
    for i in range(depth):
        out.update(vitx_layer_weights(f"{target}.layers.{i}",
                                      **attention_parts(state_dict, f"{source}.layers.{i}.0", dim),
                                      **feed_forward_parts(state_dict, f"{source}.layers.{i}.1")))
    out.update(convert_params(state_dict, f"{source}.norm", f"{target}.norm"))
    return out


def convert_patch_embedding(state_dict, source, target, dim, use_cls_token=True):
    """``to_patch_embedding`` (Rearrange, LayerNorm, Linear, LayerNorm), CLS token and positions -> ``VitxEmbeddings``."""
    out = {}
    for index, name in (("1", "norm_in"), ("2", "projection"), ("3", "norm_out")):
        out.update(convert_params(state_dict, f"{source}to_patch_embedding.{index}",
                                  f"{target}.patch_embeddings.{name}"))
    cls_token = _take(state_dict, f"{source}cls_token")
    if use_cls_token:
        out[f"{target}.cls_token"] = cls_token.reshape(1, 1, dim)
    out[f"{target}.position_embeddings"] = _take(state_dict, f"{source}pos_embedding").reshape(1, -1, dim)
    return out


def convert_vit(state_dict, kwargs):
    """A ``vit_pytorch.vit.ViT`` state dict and its kwargs -> a ``VitxForImageClassification``."""
    config = _config(VitxConfig, kwargs, VIT_KWARGS, "ViT")
    state_dict = dict(state_dict)
    dim = config.dim
    weights = convert_patch_embedding(state_dict, "", "vitx.embeddings", dim, use_cls_token=config.pool == "cls")
    weights.update(convert_transformer(state_dict, "transformer", "vitx.encoder", config.depth, dim))
    weights.update(convert_params(state_dict, "mlp_head", "classifier"))
    return _build(VitxForImageClassification, config, weights, state_dict)


def convert_project_in_out(state_dict, source, target, dim):
    """cross_vit.py ``ProjectInOut`` around an ``Attention`` of width ``dim`` -> ``CrossVitxCrossAttention``.

    The projections exist only when the two streams' widths differ.
    """
    out = vitx_layer_weights(target, **attention_parts(state_dict, f"{source}.fn", dim))
    for name in ("project_in", "project_out"):
        if f"{source}.{name}.weight" in state_dict:
            out.update(convert_params(state_dict, f"{source}.{name}", f"{target}.{name}"))
    return out


def convert_cross_vit(state_dict, kwargs):
    """A ``vit_pytorch.cross_vit.CrossViT`` state dict and its kwargs -> a ``CrossVitxForImageClassification``."""
    config = _config(CrossVitxConfig, kwargs, CROSS_VIT_KWARGS, "CrossViT")
    state_dict = dict(state_dict)
    dims = {"sm": config.sm_dim, "lg": config.lg_dim}
    weights = {}
    for stream, dim in dims.items():
        weights.update(convert_patch_embedding(state_dict, f"{stream}_image_embedder.", f"vitx.{stream}_embeddings",
                                               dim))
        for index in ("0", "1"):  # the head: LayerNorm, Linear
            weights.update(convert_params(state_dict, f"{stream}_mlp_head.{index}", f"{stream}_classifier.{index}"))
    for block in range(config.depth):
        source, target = f"multi_scale_encoder.layers.{block}", f"vitx.encoder.layers.{block}"
        weights.update(convert_transformer(state_dict, f"{source}.0", f"{target}.sm_encoder", config.sm_enc_depth,
                                           config.sm_dim))
        weights.update(convert_transformer(state_dict, f"{source}.1", f"{target}.lg_encoder", config.lg_enc_depth,
                                           config.lg_dim))
        for layer in range(config.cross_attn_depth):
            # each CrossTransformer layer: [small CLS attends to large patches, large CLS attends to small patches]
            for index, name, context in (("0", "sm_attend_lg", "lg"), ("1", "lg_attend_sm", "sm")):
                weights.update(convert_project_in_out(state_dict, f"{source}.2.layers.{layer}.{index}",
                                                      f"{target}.cross_layers.{layer}.{name}", dims[context]))
    return _build(CrossVitxForImageClassification, config, weights, state_dict)


def _build(model_class, config, weights, leftover):
    if leftover:
        raise ValueError(f"checkpoint keys that vitx cannot place: {sorted(leftover)}")
    model = model_class(config)
    model.load_state_dict(weights, strict=True)
    return model.eval()


NYSTROMFORMER_KWARGS = ("dim", "depth", "dim_head", "heads", "num_landmarks", "pinv_iterations", "attn_values_residual",
                        "attn_values_residual_conv_kernel", "attn_dropout", "ff_dropout")


def efficient_nystrom_config(kwargs):
    """The ``VitxConfig`` of a ``vit_pytorch.efficient.ViT`` wrapping a ``nystrom_attention.Nystromformer``.

    ``kwargs`` holds the efficient ViT's arguments with ``"transformer"``: the Nystromformer's arguments.
    """
    kwargs = dict(kwargs)
    transformer = dict(kwargs.pop("transformer", None) or {})
    unknown = set(kwargs) - {"image_size", "patch_size", "num_classes", "dim", "pool", "channels"}
    unknown |= {f"transformer.{k}" for k in set(transformer) - set(NYSTROMFORMER_KWARGS)}
    if unknown:
        raise ValueError(f"unknown efficient ViT / Nystromformer kwargs {sorted(unknown)}")
    if kwargs.get("pool", "cls") != "cls":
        raise ValueError("the efficient ViT's pool='mean' averages the CLS token in; vitx's pool='mean' has no CLS "
                         "token, so only pool='cls' converts.")
    if transformer.setdefault("dim", kwargs["dim"]) != kwargs["dim"]:
        raise ValueError(f"transformer dim {transformer['dim']} differs from the ViT's dim {kwargs['dim']}.")
    if transformer.get("attn_dropout", 0.0) != transformer.get("ff_dropout", 0.0):
        raise ValueError("vitx has one `dropout`; attn_dropout and ff_dropout must be equal to convert.")
    residual = transformer.get("attn_values_residual", True)
    return VitxConfig(
        image_size=kwargs["image_size"], patch_size=kwargs["patch_size"], num_classes=kwargs["num_classes"],
        channels=kwargs.get("channels", 3), dim=kwargs["dim"], depth=transformer["depth"],
        heads=transformer.get("heads", 8), dim_head=transformer.get("dim_head", 64), mlp_dim=4 * kwargs["dim"],
        dropout=transformer.get("attn_dropout", 0.0), encoder="landmark",
        encoder_kwargs=dict(num_landmarks=transformer.get("num_landmarks", 256),
                            pinv_iterations=transformer.get("pinv_iterations", 6),
                            residual_conv_kernel=transformer.get("attn_values_residual_conv_kernel", 33) if residual else 0),
    )


def convert_efficient_nystrom(state_dict, kwargs):
    """A ``vit_pytorch.efficient.ViT`` + ``Nystromformer`` state dict -> a landmark-encoder ``VitxForImageClassification``."""
    config = efficient_nystrom_config(kwargs)
    state_dict, dim = dict(state_dict), config.dim
    weights = convert_patch_embedding(state_dict, "", "vitx.embeddings", dim)
    for i in range(config.depth):
        source, target = f"transformer.layers.{i}", f"vitx.encoder.layers.{i}"
        # nystrom-attention wraps each part in PreNorm (``norm``, ``fn``); its feed-forward ``net`` has no norm
        res_conv = _take_params(state_dict, f"{source}.0.fn.res_conv", ("weight",)) \
            if config.encoder_kwargs["residual_conv_kernel"] else None
        weights.update(vitx_layer_weights(
            target, attention_norm=_take_params(state_dict, f"{source}.0.norm"),
            to_qkv=_take_params(state_dict, f"{source}.0.fn.to_qkv", ("weight",)),
            to_out=_take_params(state_dict, f"{source}.0.fn.to_out.0"), res_conv=res_conv,
            feed_forward_norm=_take_params(state_dict, f"{source}.1.norm"),
            fc1=_take_params(state_dict, f"{source}.1.fn.net.0"), fc2=_take_params(state_dict, f"{source}.1.fn.net.3")))
    weights.update(convert_params(state_dict, "mlp_head.0", "head_norm"))
    weights.update(convert_params(state_dict, "mlp_head.1", "classifier"))
    return _build(VitxForImageClassification, config, weights, state_dict)


CONVERTERS = {"vit": convert_vit, "cross_vit": convert_cross_vit, "efficient_nystrom": convert_efficient_nystrom}


def convert(model_name, state_dict, kwargs):
    """Convert with the converter registered for ``model_name`` (one of ``CONVERTERS``)."""
    if model_name not in CONVERTERS:
        raise ValueError(f"--model {model_name!r} is not supported; choose one of {sorted(CONVERTERS)}")
    return CONVERTERS[model_name](state_dict, kwargs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=sorted(CONVERTERS), help="the vit-pytorch model class")
    parser.add_argument("--kwargs", required=True, help="JSON file of the model's constructor kwargs")
    parser.add_argument("--checkpoint", required=True, help="the model's state_dict saved with torch.save")
    parser.add_argument("--output", required=True, help="folder to write the vitx model to")
    parser.add_argument("--image-mean", nargs="+", type=float, default=[0.0], metavar="MEAN",
                        help="the mean the model's inputs were normalized with after scaling pixels to [0, 1]: one "
                             "number for every channel, or one per channel (default 0: no normalization)")
    parser.add_argument("--image-std", nargs="+", type=float, default=[1.0], metavar="STD",
                        help="the matching standard deviation (default 1)")
    args = parser.parse_args(argv)
    kwargs = json.loads(Path(args.kwargs).read_text())
    state_dict = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    model = convert(args.model, state_dict, kwargs)
    save_folder(args.output, model, default_image_processor(model.config.image_size, model.config.channels,
                                                            image_mean=args.image_mean, image_std=args.image_std))
    return model


if __name__ == "__main__":
    main()
