"""What the scripts share: the default image processors (classification, segmentation), a folder's processor, the
vitx layer weight names the converters write, and writing a converted folder.

The scripts import it as a sibling module: ``python scripts/<name>.py`` puts ``scripts/`` first on
``sys.path``, and the tests add it through pytest's ``pythonpath``.
"""

import numbers
import warnings
from pathlib import Path

from transformers import AutoImageProcessor, SegformerImageProcessor, ViTImageProcessor

from configuration_vitx import _to_pair

# image processors


def _per_channel(name, value, channels):
    """``value`` (one number, or one per channel) as a list of ``channels`` floats; ``ValueError`` naming ``name``."""
    values = [value] if isinstance(value, numbers.Real) else list(value)
    if len(values) == 1:
        values = values * channels
    if len(values) != channels or not all(isinstance(v, numbers.Real) for v in values):
        raise ValueError(f"`{name}` must be one number or {channels} numbers (one per channel), got {value!r}")
    if name == "image_std" and not all(v > 0 for v in values):
        raise ValueError(f"`image_std` values must be positive (pixels are divided by them), got {value!r}")
    return [float(v) for v in values]


def default_image_processor(image_size, channels=3, image_mean=0.5, image_std=0.5, **options):
    """The ``ViTImageProcessor`` of a vitx folder whose source says nothing else.

    Resizes to ``image_size`` (an int or ``(height, width)``), rescales pixels to [0, 1] and normalizes them
    with ``image_mean`` and ``image_std`` (one number for every channel, or one per channel). The 0.5 / 0.5
    default (inputs in [-1, 1]) is transformers' ViT default and what ``scripts/train.py`` trains with;
    0 / 1 keeps the [0, 1] pixels of torchvision's ``ToTensor``. A three-channel model gets every image
    converted to RGB first, so grayscale and RGBA files work. ``options`` are further ``ViTImageProcessor``
    settings (``resample``, ...).
    """
    height, width = _to_pair(image_size)
    return ViTImageProcessor(size={"height": height, "width": width}, do_convert_rgb=channels == 3,
                             image_mean=_per_channel("image_mean", image_mean, channels),
                             image_std=_per_channel("image_std", image_std, channels), **options)


def segmentation_image_processor(image_size, image_mean=0.5, image_std=0.5):
    """The image processor of a vitx semantic segmentation folder: transformers' ``SegformerImageProcessor``,
    whose ``post_process_semantic_segmentation`` the ``image-segmentation`` pipeline calls.

    Resizes images (bilinear) and segmentation maps (nearest, ids kept) to ``image_size`` (an int or ``(height,
    width)``), rescales pixels to [0, 1] and normalizes them with ``image_mean`` and ``image_std`` (one number,
    or one per channel; the 0.5 / 0.5 default as ``default_image_processor``). Three-channel images: it does not
    convert grayscale files, which ``scripts/train_segmentation.py`` and the pipeline convert to RGB first.
    """
    height, width = _to_pair(image_size)
    return SegformerImageProcessor(size={"height": height, "width": width}, do_reduce_labels=False,
                                   image_mean=_per_channel("image_mean", image_mean, 3),
                                   image_std=_per_channel("image_std", image_std, 3))


def load_image_processor(name, config, trust_remote_code=False):
    """The image processor saved with ``name`` (a folder or Hub id); without one, with a warning, the
    ``default_image_processor`` at ``config``'s image size and channels."""
    folder = Path(name)
    if not folder.is_dir() or (folder / "preprocessor_config.json").is_file():
        try:
            return AutoImageProcessor.from_pretrained(name, trust_remote_code=trust_remote_code)
        except OSError:  # a Hub repo without an image processor; a local one that fails to load is an error
            if folder.is_dir():
                raise
    warnings.warn(f"{name} has no preprocessor_config.json; using a ViTImageProcessor with transformers' ViT "
                  f"defaults (mean and std 0.5) at the model's image size")
    return default_image_processor(config.image_size, config.num_channels)


# converters


def prefixed(target, params):
    """``{"weight": w, "bias": b}`` -> ``{"<target>.weight": w, "<target>.bias": b}``."""
    return {f"{target}.{name}": tensor for name, tensor in params.items()}


def vitx_layer_weights(target, *, attention_norm, to_qkv, to_out, res_conv=None, feed_forward_norm=None, fc1=None,
                       fc2=None):
    """The state-dict entries of one vitx layer under ``target`` (``"vitx.encoder.layers.0"``), from its parts.

    Each part maps its parameter names (``"weight"``, ``"bias"``) to tensors. ``to_qkv`` stacks the query, key
    and value rows in that order; ``res_conv`` is the landmark attention's residual convolution. Without the
    feed-forward parts the entries are the attention's alone: a CrossViT cross-attention (``...sm_attend_lg``)
    holds the same attention under the same name.
    """
    parts = {"attention.norm": attention_norm, "attention.to_qkv": to_qkv, "attention.to_out": to_out,
             "attention.res_conv": res_conv, "feed_forward.norm": feed_forward_norm, "feed_forward.fc1": fc1,
             "feed_forward.fc2": fc2}
    weights = {}
    for part, params in parts.items():
        if params is not None:
            weights.update(prefixed(f"{target}.{part}", params))
    return weights


def save_folder(output, model, image_processor):
    """Write ``model`` (weights, config, remote-code files) and ``image_processor`` to the folder ``output``."""
    model.save_pretrained(output)
    image_processor.save_pretrained(output)
    print(f"wrote {type(model).__name__} and {type(image_processor).__name__} to {output}")
