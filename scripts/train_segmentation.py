"""Train or fine-tune a vitx semantic segmentation model (a class per pixel) with the Hugging Face Trainer.

    python scripts/train_segmentation.py                           # digits scattered on canvases, offline
    python scripts/train_segmentation.py --train_dir data/train --validation_dir data/val --label_names bg,crack
    python scripts/train_segmentation.py --dataset_name my/dataset --model_type landmark
    python scripts/train_segmentation.py --model_name_or_path outputs/digits-vitx-mae   # from a pretrained encoder
    torchrun --nproc_per_node 2 scripts/train_segmentation.py ...  # DistributedDataParallel

Every ``TrainingArguments`` flag works (``--output_dir``, ``--num_train_epochs``, ``--push_to_hub``,
``--resume_from_checkpoint last`` after a kill ...), and the model and data flags of ``scripts/train.py``.
The data:

- ``--train_dir DIR`` (and ``--validation_dir DIR``): ``DIR/images/`` holds the images, ``DIR/masks/``
  single-channel PNG masks of class ids with the same file stem (255: not labelled, ignored).
- ``--dataset_name``: a ``datasets`` dataset with an image column and a segmentation map column ("image" and
  "label" or "annotation", as transformers' semantic segmentation example; ``--image_column_name`` and
  ``--label_column_name`` name others).
- neither: canvases of scikit-learn's handwritten digits, made here without a download (``digit_canvases``):
  each pixel labelled with its digit's class (1 to 10 for digits 0 to 9) or background (0); the held-out
  canvases use digits no training canvas shows.

Without a held-out split (``--validation_dir``, or a dataset's validation/test split) a fixed share of train is
held out (``--validation_split``). ``--label_names a,b,...`` names the ids; without it, ids are named by number,
up to the largest in the training masks. Images and masks are checked before training (a mask of another size
than its image, an id outside the labels, an image without a mask, a size the patch size does not divide) and
resized to the model's image size: by default, a fresh model's is the training images' own. The output folder
holds the weights, config, ``preprocessor_config.json`` (a ``SegformerImageProcessor``), the remote-code files,
the model card, ``eval_results.json`` with the metrics of ``evaluate``'s ``mean_iou`` and ``predictions.png``
(held-out images, truth, prediction), so that ``pipeline("image-segmentation", model=OUTPUT_DIR,
trust_remote_code=True)`` works on it.
"""

import functools
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from datasets import Dataset, DatasetDict, Features, Image
from matplotlib import colormaps
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from transformers import AutoConfig, AutoModelForSemanticSegmentation, TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import modeling_vitx  # noqa: E402,F401  (registers vitx with the Auto classes)
import vitx_common  # noqa: E402
from train import TRAINING_DEFAULTS  # noqa: E402  (the recipe segmentation starts from)
from configuration_vitx import _to_pair  # noqa: E402
from vitx_common import (CONFIG_FACTORIES, CardSectionTrainer, ImageDataArguments, ModelArguments,  # noqa: E402
                         check_dataset, dataset_label, load_digits_dataset, load_image_processor, make_trainer,
                         model_sizes, open_image, parse_script_args, prepare_splits, save_and_report,
                         segmentation_image_processor, split_train_eval, start_run, train_and_evaluate)

# The recipe, as TrainingArguments defaults (train.py's where segmentation has no reason to differ); any flag
# given on the command line wins. Chosen so that the digit canvases train in a few minutes on two CPU cores.
SEGMENTATION_DEFAULTS = {**TRAINING_DEFAULTS, "num_train_epochs": 10, "per_device_train_batch_size": 16,
                         "per_device_eval_batch_size": 64, "learning_rate": 2e-3, "warmup_steps": 50,
                         "label_smoothing_factor": 0.0, "eval_steps": 0.25, "save_steps": 0.25,
                         "augment": False}
# A fresh model's sizes (any size flag wins).
SEGMENTATION_SIZES = dict(patch_size=8, dim=128, depth=4, heads=4, dim_head=32, mlp_dim=256, pool="cls")
MODEL_TYPES = ("vit", "landmark")  # CrossViT's two streams have no segmentation head
IGNORE_INDEX = 255
MASK_COLUMNS = ("label", "annotation", "segmentation_map", "mask")  # the columns looked for, in this order
PREDICTIONS_NAME = "predictions.png"
SHOWN_IMAGES = 6

# the embedded digit canvases
CANVAS_SIZE = 64
CANVAS_DIGITS = (2, 4)  # digits per canvas, fewest and most
DIGIT_SIZES = (16, 24)  # an 8x8 scan upscaled to a side in this range, pixels
INK = 64  # upscaled 8-bit ink from which a pixel belongs to its digit
TRAIN_CANVASES, EVAL_CANVASES = 1000, 200
CANVAS_SEED = 0
CANVAS_LABELS = ["background"] + [f"digit {digit}" for digit in range(10)]  # the class ids of the canvases' masks


@dataclass
class SegmentationArguments:
    """The decoder's widths (``VitxConfig`` fields). The class names come with ``--label_names`` (see
    ``class_names``)."""

    segmentation_dim: int = field(default=64, metadata={"help": "Width of the decoder's fused token map."})
    segmentation_pixel_dim: int = field(
        default=8, metadata={"help": "Width of the decoder's full-resolution path from the pixels."})


@dataclass
class SegmentationDataArguments(ImageDataArguments):
    """The images and masks; ``--augment`` stays off: the random affine of ``scripts/train.py`` moves the pixels,
    not the masks."""

    def __post_init__(self):
        if self.augment:
            raise ValueError("--augment true: segmentation trains without augmentation (the random affine of "
                             "scripts/train.py would move the pixels but not the masks); drop the flag")


@dataclass
class SegmentationData:
    """Train and held-out images with their masks, checked and ready for transforms."""

    train: Dataset
    eval: Dataset
    eval_split: str
    image_column: str
    mask_column: str
    id2label: dict
    image_size: tuple  # (height, width) of the first training image


# data


def digit_canvases(count, scans, labels, seed):
    """``count`` canvases of ``CANVAS_SIZE`` pixels, each with 2 to 4 of the 8x8 ``scans`` (0..16 ink) upscaled
    (bilinear) to a side of 16 to 24 pixels at random places, never overlapping. Returns ``(images, masks)``,
    8-bit grayscale PIL images; a mask holds each digit's class + 1 where its ink is at least ``INK``, 0 elsewhere."""
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for _ in range(count):
        image = np.zeros((CANVAS_SIZE, CANVAS_SIZE), np.uint8)
        mask = np.zeros_like(image)
        taken = np.zeros_like(image, bool)
        for _ in range(rng.integers(CANVAS_DIGITS[0], CANVAS_DIGITS[1] + 1)):
            index, side = rng.integers(len(scans)), int(rng.integers(DIGIT_SIZES[0], DIGIT_SIZES[1] + 1))
            for _ in range(50):  # a free place, if one is found in 50 tries
                top, left = rng.integers(0, CANVAS_SIZE - side + 1, size=2)
                if not taken[top:top + side, left:left + side].any():
                    break
            else:
                continue
            scan = PIL.Image.fromarray(np.round(scans[index] * (255 / 16)).astype(np.uint8))
            digit = np.asarray(scan.resize((side, side), PIL.Image.BILINEAR))
            window = (slice(top, top + side), slice(left, left + side))
            image[window] = digit
            mask[window] = np.where(digit >= INK, labels[index] + 1, 0)
            taken[top - 1 if top else 0:top + side + 1, left - 1 if left else 0:left + side + 1] = True
        images.append(PIL.Image.fromarray(image))
        masks.append(PIL.Image.fromarray(mask))
    return images, masks


@functools.lru_cache(maxsize=2)  # the same canvases every call: made once a process (seconds each)
def load_digit_canvases(train_count=TRAIN_CANVASES, eval_count=EVAL_CANVASES):
    """The embedded data: a ``DatasetDict`` of ``train`` and ``validation`` digit canvases (columns "image",
    "label"), the validation canvases made of the digits ``scripts/train.py`` holds out, the training ones of the
    rest, with fixed seeds."""
    digits = split_train_eval(DatasetDict(train=load_digits_dataset()), "label", 0.2)
    features = Features({"image": Image(), "label": Image()})
    splits = {}
    for split, dataset, count, seed in (("train", digits[0], train_count, CANVAS_SEED),
                                        ("validation", digits[1], eval_count, CANVAS_SEED + 1)):
        scans = np.stack([np.asarray(image, np.float64) * (16 / 255) for image in dataset["image"]])
        images, masks = digit_canvases(count, scans, np.asarray(dataset["label"]), seed)
        splits[split] = Dataset.from_dict({"image": images, "label": masks}, features=features)
    return DatasetDict(splits)


def image_folder_pairs(folder, flag):
    """A ``Dataset`` of ``folder/images/*`` and ``folder/masks/*`` paired by file stem; ``ValueError`` for a missing
    subfolder, an image without a mask or a mask without an image."""
    images_dir, masks_dir = Path(folder) / "images", Path(folder) / "masks"
    for path in (images_dir, masks_dir):
        if not path.is_dir():
            raise ValueError(f"{flag} {folder!r} must hold images/ and masks/ folders; {str(path)!r} is missing")
    extensions = PIL.Image.registered_extensions()
    images = {p.stem: p for p in sorted(images_dir.iterdir()) if p.suffix.lower() in extensions}
    masks = {p.stem: p for p in sorted(masks_dir.iterdir()) if p.suffix.lower() in extensions}
    if not images:
        raise ValueError(f"{flag} {folder!r}: {str(images_dir)!r} holds no image files")
    for missing, there, kind in ((sorted(set(images) - set(masks)), images, "image"),
                                 (sorted(set(masks) - set(images)), masks, "mask")):
        if missing:
            other = "mask" if kind == "image" else "image"
            raise ValueError(f"{flag} {folder!r}: the {kind} {str(there[missing[0]])!r} has no {other} of the same "
                             f"stem in {other}s/ ({len(missing)} {kind}s are affected)")
    stems = sorted(images)
    return Dataset.from_dict({"image": [str(images[s]) for s in stems], "label": [str(masks[s]) for s in stems]},
                             features=Features({"image": Image(), "label": Image()}))


def load_raw_datasets(data_args):
    """A ``DatasetDict`` from ``--dataset_name``, ``--train_dir``/``--validation_dir`` or the digit canvases."""
    if data_args.train_dir and not data_args.dataset_name:
        splits = {"train": image_folder_pairs(data_args.train_dir, "--train_dir")}
        if data_args.validation_dir:
            splits["validation"] = image_folder_pairs(data_args.validation_dir, "--validation_dir")
        return DatasetDict(splits)
    if data_args.dataset_name or data_args.validation_dir:  # train.py's errors for the flags' wrong mixes
        return vitx_common.load_raw_datasets(data_args)
    return load_digit_canvases()


def mask_column(features, given=None):
    """The segmentation map column: ``given`` (checked), else the first of ``MASK_COLUMNS`` present."""
    names = list(features)
    column = given or next((name for name in MASK_COLUMNS if name in features), None)
    if column is None:
        raise ValueError(f"no segmentation map column found among {names} (looked for {list(MASK_COLUMNS)}); name "
                         f"it with --label_column_name")
    if column not in features:
        raise ValueError(f"--label_column_name {column!r} is not a column; the columns are {names}")
    if not isinstance(features[column], Image):
        raise ValueError(f"segmentation map column {column!r} holds {features[column]}, not images (masks)")
    return column


def read_mask(value, where):
    """A mask (an undecoded ``Image`` value) as a (height, width) int array of class ids; ``ValueError`` unless it
    has a single channel."""
    mask = open_image(value, where)
    if mask.mode not in ("L", "P", "I", "I;16", "1"):
        raise ValueError(f"mask {value.get('path') or where!r} ({where}) has mode {mask.mode!r}; masks must be "
                         f"single-channel images of class ids (mode L, P or I)")
    return np.asarray(mask, dtype=np.int64)


def check_pairs(dataset, split, image_column, label_column, num_labels=None):
    """Read every image and mask of ``split`` once: ``ValueError`` naming the file for an unreadable one, a mask
    whose size differs from its image's, or (with ``num_labels``) a mask id outside [0, num_labels) other than
    255. Returns the largest id seen (255 aside)."""
    largest = -1
    for row, example in enumerate(dataset):
        where = f"split {split!r}, row {row}"
        image = open_image(example[image_column], f"{where}, column {image_column!r}")
        mask = read_mask(example[label_column], f"{where}, column {label_column!r}")
        name = example[label_column].get("path") or where
        if mask.shape != (image.height, image.width):
            raise ValueError(f"mask {name!r} is {mask.shape[1]}x{mask.shape[0]} pixels, its image "
                             f"{example[image_column].get('path') or where!r} {image.width}x{image.height}: a mask "
                             f"labels each pixel of its image and must have the image's size")
        ids = np.unique(mask[mask != IGNORE_INDEX])
        if num_labels is not None and ids.size and (ids[0] < 0 or ids[-1] >= num_labels):
            wrong = [int(i) for i in ids if i < 0 or i >= num_labels]
            raise ValueError(f"mask {name!r} holds ids {wrong}, outside the {num_labels} labels "
                             f"(ids 0..{num_labels - 1}, or 255 for pixels not labelled)")
        largest = max(largest, int(ids[-1]) if ids.size else -1)
    return largest


def class_names(label_names):
    """The class names ``--label_names`` gives (``a,b,c`` or ``a b c``), or ``None``.

    ``TrainingArguments`` owns the flag (the names of the inputs that hold labels), which in this script are
    always the masks (``labels``); here it names the class ids 0, 1, ... instead."""
    if not label_names:
        return None
    names = [name.strip() for given in label_names for name in given.split(",")]
    if not all(names) or len(set(names)) != len(names):
        raise ValueError(f"--label_names must be distinct non-empty class names, separated by commas or spaces, "
                         f"got {' '.join(label_names)!r}")
    return names


def label_names(names, largest):
    """``id2label``: the class ``names`` given, else one name per id up to the ``largest`` in the masks."""
    if names:
        return dict(enumerate(names))
    if largest < 0:
        raise ValueError("the training masks label no pixel (every id is 255): there is nothing to learn")
    return {i: str(i) for i in range(largest + 1)}


def prepare_data(raw, data_args, names=None):
    """Columns, splits and label names (the class ``names`` given, else the ids) from a raw ``DatasetDict``; every
    image and mask checked before training."""
    if "train" not in raw:
        raise ValueError(f"the dataset has no 'train' split; its splits are {list(raw)}")
    features = raw["train"].features
    image_column = data_args.image_column_name or ("image" if "image" in features else None)  # before its mask
    data_args = replace(data_args, image_column_name=image_column,
                        label_column_name=mask_column(features, data_args.label_column_name))
    train_set, eval_set, eval_split, image_column, label_column = prepare_splits(raw, data_args)
    train_set, eval_set = (d.cast_column(label_column, Image(decode=False)) for d in (train_set, eval_set))
    largest = check_pairs(train_set, "train", image_column, label_column, len(names) if names else None)
    id2label = label_names(names, largest)
    check_dataset(eval_set, eval_split, image_column)  # an empty held-out split is named
    check_pairs(eval_set, eval_split, image_column, label_column, len(id2label))
    first = open_image(train_set[0][image_column], "split 'train', row 0")
    return SegmentationData(train_set, eval_set, eval_split, image_column, label_column, id2label,
                            (first.height, first.width))


class SegmentationTransform:
    """``Dataset.with_transform`` callable: undecoded images and masks -> ``pixel_values`` and ``labels`` (class ids
    per pixel), both resized to the processor's size (masks by nearest neighbour)."""

    def __init__(self, processor, image_column, label_column):
        self.processor, self.image_column, self.label_column = processor, image_column, label_column

    def __call__(self, batch):
        images = [open_image(value, f"column {self.image_column!r}").convert("RGB")
                  for value in batch[self.image_column]]
        masks = [read_mask(value, f"column {self.label_column!r}") for value in batch[self.label_column]]
        encoded = self.processor(images=images, segmentation_maps=masks, return_tensors="pt")
        return {"pixel_values": encoded["pixel_values"], "labels": encoded["labels"].long()}


# model


def fresh_sizes(model_args, image_size):
    """``SEGMENTATION_SIZES`` at ``image_size`` (the training images' (height, width), unless ``--image_size``
    is given), every size flag the user gave applied (``model_sizes``); ``ValueError`` when the patch size does
    not divide the image size."""
    height, width = image_size
    preset = {**SEGMENTATION_SIZES, "image_size": [height, width] if height != width else height}
    sizes = model_sizes(model_args, max(height, width), ((None, preset),))
    (height, width), patch = _to_pair(sizes["image_size"]), sizes["patch_size"]
    if height % patch or width % patch:
        source = "--image_size" if model_args.image_size else "the training images"
        raise ValueError(f"{source}: {height}x{width} pixels, which the patch size {patch} does not divide; give "
                         f"a --patch_size that divides both sides, or an --image_size that the patch size divides "
                         f"(images and masks are resized to it)")
    return sizes


def build_model(model_args, seg_args, data):
    """``(model, processor)``: a saved vitx ViT (a classifier, a masked autoencoder, a segmentation model) with a
    segmentation head for these labels, or a fresh ``--model_type`` model sized by ``fresh_sizes``."""
    label2id = {name: i for i, name in data.id2label.items()}
    path = model_args.model_name_or_path
    if path:
        config = AutoConfig.from_pretrained(path, trust_remote_code=model_args.trust_remote_code)
        if config.model_type != "vitx":
            raise ValueError(f"--model_name_or_path {path!r} holds a {type(config).__name__} model; semantic "
                             f"segmentation takes a vitx ViT (standard or landmark encoder)")
        model = AutoModelForSemanticSegmentation.from_pretrained(
            path, num_labels=len(data.id2label), id2label=data.id2label, label2id=label2id,
            ignore_mismatched_sizes=True, trust_remote_code=model_args.trust_remote_code)
        saved = load_image_processor(path, model.config, model_args.trust_remote_code)
        if hasattr(saved, "post_process_semantic_segmentation"):
            return model, saved
        return model, segmentation_image_processor(model.config.image_size, saved.image_mean, saved.image_std)
    if model_args.model_type not in MODEL_TYPES:
        raise ValueError(f"--model_type {model_args.model_type!r} cannot segment: choose one of {list(MODEL_TYPES)} "
                         f"(CrossViT's two streams have no segmentation head)")
    config = CONFIG_FACTORIES[model_args.model_type](
        fresh_sizes(model_args, data.image_size), model_args.num_landmarks, id2label=data.id2label,
        segmentation_dim=seg_args.segmentation_dim, segmentation_pixel_dim=seg_args.segmentation_pixel_dim)
    model = AutoModelForSemanticSegmentation.from_config(config)
    return model, segmentation_image_processor(model.config.image_size)


# evaluation


def mean_iou(predictions, labels, num_labels, ignore_index=IGNORE_INDEX):
    """The metrics of ``evaluate``'s ``mean_iou``, computed here: per class, intersection over union and accuracy
    (intersection over the class's labelled pixels), their means over the classes present (``mean_iou``,
    ``mean_accuracy``) and the share of labelled pixels predicted right (``overall_accuracy``). Pixels labelled
    ``ignore_index`` count nowhere; a class with no pixel in labels or predictions gets ``None`` per category
    (``evaluate`` gives NaN, which JSON cannot hold) and no share of the means."""
    predictions, labels = np.asarray(predictions).ravel(), np.asarray(labels).ravel()
    kept = labels != ignore_index
    predictions, labels = predictions[kept], labels[kept]
    hit = labels[predictions == labels]
    intersect = np.bincount(hit, minlength=num_labels)[:num_labels].astype(np.float64)
    area_predicted = np.bincount(predictions, minlength=num_labels)[:num_labels]
    area_label = np.bincount(labels, minlength=num_labels)[:num_labels]
    union = area_predicted + area_label - intersect
    with np.errstate(divide="ignore", invalid="ignore"):
        iou, accuracy = intersect / union, intersect / area_label
    return {"mean_iou": float(np.nanmean(iou)) if (union > 0).any() else float("nan"),
            "mean_accuracy": float(np.nanmean(accuracy)) if (area_label > 0).any() else float("nan"),
            "overall_accuracy": float(intersect.sum() / max(area_label.sum(), 1)),
            "per_category_iou": [None if np.isnan(v) else float(v) for v in iou],
            "per_category_accuracy": [None if np.isnan(v) else float(v) for v in accuracy]}


class SegmentationMetrics:
    """The Trainer's ``compute_metrics``: ``mean_iou`` over every held-out pixel."""

    def __init__(self, num_labels):
        self.num_labels = num_labels

    def __call__(self, eval_pred):
        predictions = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        return mean_iou(predictions, eval_pred.label_ids, self.num_labels)


def predicted_classes(logits, labels):
    """The Trainer's ``preprocess_logits_for_metrics``: each pixel's class, so evaluation keeps ids, not logits."""
    logits = logits[0] if isinstance(logits, tuple) else logits
    return logits.argmax(dim=1)


@torch.no_grad()
def plot_predictions(model, processor, held_out, path, count=SHOWN_IMAGES):
    """A PNG of the first ``count`` held-out images (a transformed dataset): the image, its mask and the model's
    prediction, one colour per class (pixels not labelled in gray)."""
    was_training = model.training
    model.eval()
    batch = held_out[:count]
    pixel_values = batch["pixel_values"].to(model.device)
    predicted = model(pixel_values=pixel_values).logits.argmax(dim=1).cpu().numpy()
    model.train(was_training)
    mean = torch.tensor(processor.image_mean).view(1, -1, 1, 1)
    std = torch.tensor(processor.image_std).view(1, -1, 1, 1)
    images = (pixel_values.float().cpu() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    num_labels = model.config.num_labels
    colours = ListedColormap(([(0.05, 0.05, 0.05)] + list(colormaps["tab20"].colors) * (num_labels // 20 + 1))
                             [:max(num_labels, 2)])  # class 0 (often the background) dark
    labels = batch["labels"].numpy()
    rows = {"image": images, "truth": np.ma.masked_equal(labels, IGNORE_INDEX), "prediction": predicted}
    figure = Figure(figsize=(1.6 * len(images), 1.6 * len(rows) + 0.3), layout="constrained")
    axes = figure.subplots(len(rows), len(images), squeeze=False)
    for axes_row, (title, shown) in zip(axes, rows.items()):
        axes_row[0].set_title(title, loc="left", fontsize=9)
        for ax, item in zip(axes_row, shown):
            if title == "image":
                ax.imshow(item)
            else:
                ax.set_facecolor("0.6")
                ax.imshow(item, cmap=colours, vmin=-0.5, vmax=num_labels - 0.5, interpolation="nearest")
            ax.set_axis_off()
    figure.savefig(path, dpi=100)


def card_section(name, data, metrics):
    """The model card's account of the training data and the held-out scores per class."""
    rows = "\n".join(f"| {data.id2label[i]} | {'n/a' if iou is None else f'{iou:.3f}'} |"
                     for i, iou in enumerate(metrics["eval_per_category_iou"]))
    return f"""## Semantic segmentation

Trained with vitx's `scripts/train_segmentation.py` on {len(data.train):,} images of {name} with their masks
(a class per pixel). On the {len(data.eval):,} held-out images (split `{data.eval_split}`): mean IoU \
{metrics['eval_mean_iou']:.3f}, mean accuracy {metrics['eval_mean_accuracy']:.3f}, pixel accuracy \
{metrics['eval_overall_accuracy']:.3f}.

| class | IoU |
| --- | --- |
{rows}

![Held-out images, their masks and the predictions]({PREDICTIONS_NAME})
"""


def main(argv=None):
    """Train, evaluate, save (and with ``--push_to_hub`` push) a vitx segmentation model; returns the eval metrics
    (``eval_mean_iou``, ``eval_mean_accuracy``, ``eval_overall_accuracy``, ``eval_per_category_*``, ``eval_loss``)."""
    start = time.perf_counter()
    model_args, seg_args, data_args, training_args = parse_script_args(
        argv, (ModelArguments, SegmentationArguments, SegmentationDataArguments, TrainingArguments),
        SEGMENTATION_DEFAULTS, folder_suffix="vitx-segmentation")
    if training_args.label_smoothing_factor:
        raise ValueError(f"--label_smoothing_factor {training_args.label_smoothing_factor}: the Trainer's label "
                         f"smoother reads class scores on the last axis, which per-pixel logits do not have; drop it")
    names, training_args.label_names = class_names(training_args.label_names), ["labels"]
    if not (data_args.dataset_name or data_args.train_dir):
        names = names or CANVAS_LABELS
    start_run(training_args)
    data = prepare_data(load_raw_datasets(data_args), data_args, names)
    model, processor = build_model(model_args, seg_args, data)
    transform = SegmentationTransform(processor, data.image_column, data.mask_column)
    held_out = data.eval.with_transform(transform)
    trainer = make_trainer(
        model, training_args, model_args.model_name_or_path, CardSectionTrainer, processing_class=processor,
        train_dataset=data.train.with_transform(transform), eval_dataset=held_out,
        compute_metrics=SegmentationMetrics(model.config.num_labels), preprocess_logits_for_metrics=predicted_classes)
    metrics = train_and_evaluate(trainer)
    name = dataset_label(data_args)
    if trainer.is_world_process_zero():
        plot_predictions(model, processor, held_out, os.path.join(training_args.output_dir, PREDICTIONS_NAME))
        trainer.card_section = card_section(name, data, metrics)
    save_and_report(trainer, metrics, dict(finetuned_from=model_args.model_name_or_path, tasks="image-segmentation",
                                           dataset=name, tags=["image-segmentation", "vitx"]),
                    f"vitx-segmentation: {name} {data.eval_split} mean IoU {metrics['eval_mean_iou']:.2%}, pixel "
                    f"accuracy {metrics['eval_overall_accuracy']:.2%} on {len(data.eval)} images", start)
    return metrics

if __name__ == "__main__":
    main()
