"""Turn a vitx model and an image into a figure of where the model looks.

    python scripts/visualize_attention.py --model my-vit --image cat.png dog.png --output attention.png

``--model`` is a vitx folder or Hub id (ViT, landmark or x-transformers encoder, or CrossViT), ``--image``
one or more image files. ``--output`` ending in ``.png`` writes one figure (a grid with a block per image);
anything else is a folder that receives one ``<image stem>.png`` per image.

Each image's block shows the image, the attention rollout of the CLS token (Abnar & Zuidema, 2020)
overlaid as a heat map at the image's resolution, and the last layer's per-head CLS attention as small
panels; the title gives the predicted label and its probability. CrossViT gets one rollout per stream,
side by side. With ``pool="mean"`` there is no CLS token: the maps are the mean over all query tokens,
and the figure says so. The landmark encoder's maps are its Nystrom approximations.

The image goes through the folder's ``preprocessor_config.json`` (``AutoImageProcessor``) when there is
one, else (with a warning) through the default ``ViTImageProcessor`` resizing to ``config.image_size``.
Drawing needs matplotlib, an optional extra (``pip install -e ".[viz]"``); figures are matplotlib
``Figure`` objects written by its Agg canvas, so neither pyplot nor a display is involved.
"""

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, HfArgumentParser

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from configuration_vitx import _patch_grid, _to_pair  # noqa: E402
import modeling_vitx  # noqa: E402,F401  (registers vitx and crossvitx with the Auto classes)
from vitx_common import load_image_processor  # noqa: E402  (the folder's processor, else the default)

# Large photos are drawn at most this many pixels on their longest side: a figure cannot show more, and
# upsampling a dozen head maps to a 12-megapixel image would only cost time.
MAX_DISPLAY_SIZE = 512

# the rollout


def attention_rollout(attentions):
    """Attention rollout (Abnar & Zuidema, 2020) of a stack of attention maps, first layer first.

    ``attentions``: a sequence of (..., heads, tokens, tokens) maps, one per layer (rows are queries).
    Each layer's map is averaged over its heads, the residual connection is accounted for by adding the
    identity, and the rows are renormalized to sum to 1; the layers are then multiplied through:
    ``rollout = A_L @ ... @ A_2 @ A_1``. Returns the (..., tokens, tokens) rolled-out matrix in float32,
    whose row ``i`` says how much each input token flows into output token ``i``.

    Softmax maps have non-negative rows summing to 1. The landmark (Nystrom) encoder's maps are
    approximations whose rows sum only to about 1 and may hold small negative entries (its
    pseudo-inverse is iterative), so the head average is clamped at zero before the identity is added
    and every row is renormalized by its actual sum: the result is row-stochastic either way, and for
    softmax maps the clamp changes nothing.
    """
    if len(attentions) == 0:
        raise ValueError("`attentions` must hold at least one layer's attention map, got none.")
    rollout = None
    for attention in attentions:
        if attention.dim() < 3 or attention.shape[-1] != attention.shape[-2]:
            raise ValueError(f"each attention map must be (..., heads, tokens, tokens), got {tuple(attention.shape)}.")
        mixed = attention.float().mean(dim=-3).clamp(min=0)
        mixed = mixed + torch.eye(mixed.shape[-1], dtype=mixed.dtype, device=mixed.device)
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        rollout = mixed if rollout is None else mixed @ rollout
    return rollout


# what the model looked at


@dataclass
class StreamAttention:
    """One token stream's maps over its patch grid: ``rollout`` (grid_h, grid_w), ``heads`` (heads, grid_h, grid_w)."""

    name: str
    rollout: torch.Tensor
    heads: torch.Tensor


@dataclass
class AttentionMaps:
    """What one image's figure shows: the streams' maps, how they were read, and the prediction (if any)."""

    streams: List[StreamAttention]
    query: str
    notes: List[str] = field(default_factory=list)
    label: Optional[str] = None
    probability: Optional[float] = None


def query_row(maps, has_cls):
    """The row of (..., tokens, tokens) ``maps`` the figure shows: the CLS token's, or the mean over query tokens."""
    return maps[..., 0, :] if has_cls else maps.mean(dim=-2)


def stream_attention(name, attentions, grid, has_cls):
    """A ``StreamAttention`` from one image's per-layer (1, heads, tokens, tokens) maps and its (grid_h, grid_w)."""
    prefix = int(has_cls)

    def on_grid(rows):  # the CLS token's own column is not a place in the image
        return rows[..., prefix:].reshape(*rows.shape[:-1], *grid)

    return StreamAttention(name, on_grid(query_row(attention_rollout(attentions)[0], has_cls)),
                           on_grid(query_row(attentions[-1][0].float(), has_cls)))


def _streams(config, outputs, size):
    """The model's token streams, each with its per-layer maps, patch grid and CLS flag."""
    if config.model_type == "crossvitx":
        return [(f"small patches ({_size_text(config.sm_patch_size)})", outputs.sm_attentions,
                 _patch_grid(size, config.sm_patch_size), True),
                (f"large patches ({_size_text(config.lg_patch_size)})", outputs.lg_attentions,
                 _patch_grid(size, config.lg_patch_size), True)]
    return [("", outputs.attentions, _patch_grid(size, config.patch_size), config.pool == "cls")]


def _size_text(size):
    return "x".join(str(side) for side in _to_pair(size))


def attention_maps(model, pixel_values):
    """Run ``model`` on one preprocessed image (1, channels, height, width) and collect its ``AttentionMaps``.

    Raises a ``ValueError`` naming the model when its encoder does not declare that it returns attention
    maps (a user encoder module), or when its forward pass with ``output_attentions=True`` fails (an
    x-transformers encoder with flash attention).
    """
    config = model.config
    size = tuple(pixel_values.shape[-2:])
    try:
        with torch.no_grad():
            outputs = model(pixel_values.to(model.device, model.dtype), output_attentions=True,
                            interpolate_pos_encoding=size != _to_pair(config.image_size), return_dict=True)
    except ValueError as error:  # the model names an encoder that returns no maps, or x-transformers with flash
        raise ValueError(f"cannot draw attention for {type(model).__name__} (encoder "
                         f"{getattr(config, 'encoder', 'vit')!r}): asking it for attention maps failed: {error}") \
            from error
    streams = _streams(config, outputs, size)
    if any(not maps for _, maps, _, _ in streams):
        raise ValueError(f"cannot draw attention for {type(model).__name__}: `output_attentions=True` returned no "
                         f"attention maps.")
    has_cls = streams[0][3]
    notes = [] if has_cls else ["pool='mean': no CLS token"]
    if model.base_model.encoder.approximate_attentions:
        notes.append(f"approximate maps ({config.encoder} encoder)")
    result = AttentionMaps(streams=[stream_attention(name, maps, grid, cls) for name, maps, grid, cls in streams],
                           query="CLS token" if has_cls else "mean over query tokens", notes=notes)
    logits = getattr(outputs, "logits", None)
    if logits is not None:
        probabilities = logits[0].float().softmax(dim=-1)
        index = int(probabilities.argmax())
        result.label = str(config.id2label.get(index, index))
        result.probability = float(probabilities[index])
    return result


# loading


def load_model(name):
    """The vitx model at ``name`` (a folder or Hub id) in eval mode: its classifier, or the bare model.

    A model saved with a user encoder module cannot be rebuilt from its folder, nor return attention
    maps, so it is refused with a ``ValueError`` naming it.
    """
    config = AutoConfig.from_pretrained(name)
    if getattr(config, "encoder", None) == "module":
        raise ValueError(f"cannot draw attention for --model {name}: it was built around a user encoder module "
                         f"({config.encoder_kwargs.get('class')}), which returns tokens only, so its attention maps "
                         f"cannot be returned.")
    bare = config.architectures and not any(a.endswith("ForImageClassification") for a in config.architectures)
    return (AutoModel if bare else AutoModelForImageClassification).from_pretrained(name).eval()


def load_image(path, channels=3):
    """The image file at ``path`` as a PIL image with the model's ``channels`` (1: grayscale, 3: RGB)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {str(path)!r} does not exist.")
    if channels not in (1, 3):
        raise ValueError(f"images can be drawn for models with 1 or 3 `channels`, this one has {channels}.")
    try:
        with Image.open(path) as image:
            return image.convert("L" if channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"image file {str(path)!r} cannot be read as an image: {error}") from error


def display_image(image, processor, pixel_values):
    """The picture to draw the maps on: the image itself, or what the model saw when the processor crops.

    The patch grid covers the whole image only when the processor resizes without cropping (as
    ``ViTImageProcessor``); after a center crop the model's own input is drawn instead.
    """
    if getattr(processor, "do_center_crop", False):
        mean = torch.tensor(processor.image_mean).view(-1, 1, 1)
        std = torch.tensor(processor.image_std).view(-1, 1, 1)
        pixels = (pixel_values[0].float().cpu() * std + mean).clamp(0, 1).mul(255).byte()
        image = Image.fromarray(pixels.permute(1, 2, 0).squeeze(-1).numpy())
    image = image.copy()
    image.thumbnail((MAX_DISPLAY_SIZE, MAX_DISPLAY_SIZE))
    return image


def upsample(grid_map, size):
    """A (grid_h, grid_w) map resized (bilinear) to the image's (height, width) and scaled to [0, 1] for display."""
    resized = F.interpolate(grid_map[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
    low, high = resized.min(), resized.max()
    return (resized - low) / (high - low) if high > low else torch.zeros_like(resized)


# drawing


def _matplotlib_figure():
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("drawing attention needs matplotlib: pip install -e \".[viz]\" "
                          "(or pip install matplotlib)") from error
    return Figure


def _show(axes, image, title, fontsize=8):
    axes.imshow(image, cmap="gray" if image.mode == "L" else None, interpolation="nearest")
    axes.set_title(title, fontsize=fontsize)
    axes.set_axis_off()


def _overlay(axes, image, grid_map, title, fontsize=8):
    _show(axes, image, title, fontsize)
    return axes.imshow(upsample(grid_map, (image.height, image.width)).numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)


def head_grid(heads):
    """(rows, columns) of the small per-head panels: as square as possible, so they fill one large panel's place."""
    columns = math.ceil(math.sqrt(heads))
    return math.ceil(heads / columns), columns


def draw_attention(figure, image, maps, title):
    """Draw one image's row into ``figure`` (a matplotlib ``Figure`` or ``SubFigure``).

    Left to right: the image; each stream's rollout overlaid on it; each stream's last-layer heads.
    """
    prediction = "no classification head" if maps.label is None else \
        f"predicted {maps.label!r} ({maps.probability:.1%})"
    figure.suptitle(f"{title}    {prediction}", fontsize=11, fontweight="bold")
    panels = figure.subfigures(1, 1 + 2 * len(maps.streams))
    _show(panels[0].subplots(), image, "input")
    for panel, stream in zip(panels[1:], maps.streams):
        lines = [f"{stream.name}: rollout" if stream.name else "attention rollout", maps.query, *maps.notes]
        axes = panel.subplots()
        heat = _overlay(axes, image, stream.rollout, "\n".join(lines))
        colorbar = panel.colorbar(heat, ax=axes, fraction=0.046, pad=0.03, ticks=[0, 1])
        colorbar.ax.set_yticklabels(["low", "high"], fontsize=7)
    for panel, stream in zip(panels[1 + len(maps.streams):], maps.streams):
        panel.suptitle(f"last layer, per head\n{stream.name or maps.query}", fontsize=8)
        rows, columns = head_grid(len(stream.heads))
        for index, axes in enumerate(panel.subplots(rows, columns, squeeze=False).ravel()):
            if index < len(stream.heads):
                _overlay(axes, image, stream.heads[index], f"head {index + 1}", fontsize=6)
            else:
                axes.set_axis_off()


ROW_WIDTH, ROW_HEIGHT = 2.5, 3.0  # inches per panel column and per image row


def visualize(model, processor, image_paths, output, dpi=100):
    """Draw the attention of ``model`` on each image file; returns the PNG paths written.

    ``output`` ending in ``.png``: one figure with a block per image. Otherwise a folder that receives
    ``<image stem>.png`` per image.
    """
    Figure = _matplotlib_figure()
    channels = getattr(model.config, "channels", 3)
    images = [(Path(path), load_image(path, channels)) for path in image_paths]  # every file checked before any run
    blocks = []
    for path, image in images:
        pixel_values = processor(images=image, return_tensors="pt")["pixel_values"]
        blocks.append((path, display_image(image, processor, pixel_values),
                       attention_maps(model, pixel_values)))
    output = Path(output)
    groups = [(output, blocks)] if output.suffix.lower() == ".png" else \
        [(output / f"{path.stem}.png", [(path, image, maps)]) for path, image, maps in blocks]
    for target, group in groups:
        columns = max(1 + 2 * len(maps.streams) for _, _, maps in group)
        figure = Figure(figsize=(ROW_WIDTH * columns, ROW_HEIGHT * len(group)), layout="constrained")
        subfigures = figure.subfigures(len(group), 1, squeeze=False)[:, 0]
        for subfigure, (path, image, maps) in zip(subfigures, group):
            draw_attention(subfigure, image, maps, path.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(target, dpi=dpi)
    return [target for target, _ in groups]


# command line


@dataclass
class VisualizeArguments:
    """Which model, which images, and where the figure goes."""

    model: str = field(metadata={"help": "vitx model folder or Hub id"})
    image: List[str] = field(metadata={"help": "one or more image files"})
    output: str = field(metadata={"help": "a .png file (one figure, a block per image) or a folder (one PNG per image)"})
    dpi: int = field(default=100, metadata={"help": "resolution of the written PNG"})


def main(argv=None):
    """Parse the command line, draw and write the figure(s)."""
    (args,) = HfArgumentParser(VisualizeArguments, description=__doc__).parse_args_into_dataclasses(argv)
    model = load_model(args.model)
    written = visualize(model, load_image_processor(args.model, model.config), args.image, args.output, args.dpi)
    for path in written:
        print(f"wrote {path}")
    return written


if __name__ == "__main__":
    main()
