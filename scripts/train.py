"""Train or fine-tune a vitx image classifier with the Hugging Face Trainer.

    python scripts/train.py                                        # scikit-learn's digits, offline
    python scripts/train.py --dataset_name cifar10 --num_train_epochs 10
    python scripts/train.py --train_dir data/train --validation_dir data/val
    python scripts/train.py --model_name_or_path my-vit --dataset_name beans
    torchrun --nproc_per_node 2 scripts/train.py ...               # DistributedDataParallel

Every ``TrainingArguments`` flag works (``--output_dir``, ``--num_train_epochs``, ``--bf16``,
``--push_to_hub``, ``--resume_from_checkpoint`` ...); the defaults below are the recipe for
the digits. With no data flags the script trains on scikit-learn's handwritten digits (1,797
8x8 scans, no download) with a fixed, stratified 80/20 split. The output folder holds the
safetensors weights, a config with the label names, ``preprocessor_config.json``, the
remote-code files, the Trainer's model card (README.md), ``eval_results.json`` and
``training_curves.png``, so ``pipeline("image-classification", model=OUTPUT_DIR,
trust_remote_code=True)`` works on it as it is.
"""

import io
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, load_dataset
from matplotlib.figure import Figure
from transformers import (AutoConfig, AutoModelForImageClassification, HfArgumentParser, Trainer, TrainingArguments,
                          set_seed)
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from configuration_vitx import CrossVitxConfig, VitxConfig  # noqa: E402
import modeling_vitx  # noqa: E402,F401  (registers vitx with the Auto classes)
from vitx_common import default_image_processor, load_image_processor  # noqa: E402

# The recipe, as TrainingArguments defaults; any flag given on the command line wins.
TRAINING_DEFAULTS = {
    "num_train_epochs": 60,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 256,
    "learning_rate": 2e-3,
    "weight_decay": 0.05,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 50,
    "label_smoothing_factor": 0.1,
    "eval_strategy": "steps",  # 20 evaluations and checkpoints per run, whatever the dataset's size
    "eval_steps": 0.05,
    "save_strategy": "steps",
    "save_steps": 0.05,
    "save_total_limit": 2,
    "logging_strategy": "steps",
    "logging_steps": 10,
    "dataloader_num_workers": 1,  # images are decoded and augmented beside the training loop
    "dataloader_pin_memory": torch.cuda.is_available(),  # pinned memory only speeds up copies to a GPU
    "remove_unused_columns": False,  # the columns feed the on-the-fly transform, not the model
    "report_to": "none",
    "seed": 42,
}

# Fresh-model sizes by the dataset's native resolution (longest image side, pixels), smallest first.
SIZE_PRESETS = (
    (16, dict(image_size=24, patch_size=4, dim=96, depth=4, heads=4, dim_head=24, mlp_dim=192, pool="mean")),
    (48, dict(image_size=32, patch_size=4, dim=192, depth=6, heads=6, dim_head=32, mlp_dim=384, pool="cls")),
    (128, dict(image_size=96, patch_size=8, dim=256, depth=6, heads=8, dim_head=32, mlp_dim=512, pool="cls")),
    (None, dict(image_size=224, patch_size=16, dim=384, depth=6, heads=6, dim_head=64, mlp_dim=1536, pool="cls")),
)
SPLIT_SEED = 0  # held-out splits made here are the same whatever the training seed
EVAL_SPLITS = ("validation", "valid", "val", "test")
CURVES_NAME = "training_curves.png"


@dataclass
class ModelArguments:
    """Which model to train: a saved one (``--model_name_or_path``) or a fresh one (``--model_type`` + sizes)."""

    model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "A vitx folder or Hub id to fine-tune; new label sets get a new head."})
    model_type: str = field(default="vit", metadata={"help": "Family of a fresh model: vit, landmark or crossvit."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow --model_name_or_path to run its own code (Hub remote code)."})
    image_size: Optional[int] = field(default=None, metadata={"help": "Input size; default by dataset resolution."})
    patch_size: Optional[int] = field(default=None, metadata={"help": "Patch size; default by dataset resolution."})
    dim: Optional[int] = field(default=None, metadata={"help": "Token width."})
    depth: Optional[int] = field(default=None, metadata={"help": "Transformer blocks."})
    heads: Optional[int] = field(default=None, metadata={"help": "Attention heads."})
    dim_head: Optional[int] = field(default=None, metadata={"help": "Width of each attention head."})
    mlp_dim: Optional[int] = field(default=None, metadata={"help": "Feed-forward width."})
    pool: Optional[str] = field(default=None, metadata={"help": "'cls' or 'mean'."})
    num_landmarks: Optional[int] = field(
        default=None, metadata={"help": "--model_type landmark: landmarks per layer (default: a quarter of the "
                                        "tokens, at most 256)."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout in attention and feed-forward."})
    emb_dropout: float = field(default=0.0, metadata={"help": "Dropout on the token embeddings."})


@dataclass
class ImageDataArguments:
    """Where the images come from; with none of the data flags, scikit-learn's digits."""

    dataset_name: Optional[str] = field(
        default=None, metadata={"help": "A Hub dataset id or local dataset folder for `datasets.load_dataset`."})
    dataset_config_name: Optional[str] = field(default=None, metadata={"help": "The dataset's configuration."})
    train_dir: Optional[str] = field(default=None, metadata={"help": "Image folder (one subfolder per class)."})
    validation_dir: Optional[str] = field(default=None, metadata={"help": "Image folder for evaluation."})
    image_column_name: Optional[str] = field(default=None, metadata={"help": "Default: the first Image column."})
    label_column_name: Optional[str] = field(
        default=None, metadata={"help": "Default: the first ClassLabel column, else 'label' or 'labels'."})
    validation_split: float = field(
        default=0.2, metadata={"help": "Share of train held out (stratified, fixed) when there is no eval split."})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "Train on the first N examples."})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "Evaluate on the first N examples."})
    check_images: bool = field(
        default=True, metadata={"help": "Decode every image once before training, so a bad file fails up front."})
    augment: bool = field(default=True, metadata={"help": "Random affine augmentation of training images."})
    max_rotation: float = field(default=5.0, metadata={"help": "Augmentation: largest rotation, degrees."})
    max_shift: float = field(default=0.05, metadata={"help": "Augmentation: largest shift, share of the image side."})
    max_scale: float = field(default=0.05, metadata={"help": "Augmentation: largest zoom in or out, share."})


@dataclass
class DataArguments(ImageDataArguments):
    """The images and their labels, and how many of the labelled training examples to learn from."""

    train_fraction: Optional[float] = field(
        default=None, metadata={"help": "Learn from this share (0, 1] of the labelled training split, a stratified "
                                        "sample (the same whatever --seed); the held-out split is unchanged."})
    train_samples: Optional[int] = field(
        default=None, metadata={"help": "Learn from N labelled training examples, a stratified sample (the same "
                                        "whatever --seed); the held-out split is unchanged."})

    def __post_init__(self):
        if self.train_fraction is not None and self.train_samples is not None:
            raise ValueError(f"give either --train_fraction ({self.train_fraction}) or --train_samples "
                             f"({self.train_samples}), not both")
        if self.train_fraction is not None and not 0 < self.train_fraction <= 1:
            raise ValueError(f"--train_fraction must be in (0, 1], got {self.train_fraction!r}")
        if self.train_samples is not None and self.train_samples < 1:
            raise ValueError(f"--train_samples must be a positive number of examples, got {self.train_samples!r}")


@dataclass
class PreparedData:
    """Train and eval splits with their columns and label names, checked and ready for transforms."""

    train: Dataset
    eval: Dataset
    eval_split: str
    image_column: str
    label_column: str
    id2label: dict
    resolution: int


# arguments


def dataset_label(data_args):
    """A short name for the data: 'digits', the dataset id's last part, or the train folder's name."""
    if data_args.dataset_name:
        return Path(data_args.dataset_name.rstrip("/")).name
    if data_args.train_dir:
        return Path(data_args.train_dir.rstrip("/")).resolve().parent.name or "images"
    return "digits"


def parse_args(argv=None, dataclass_types=(ModelArguments, DataArguments, TrainingArguments),
               defaults=TRAINING_DEFAULTS, folder_suffix="vitx"):
    """The ``dataclass_types`` (by default ``(ModelArguments, DataArguments, TrainingArguments)``) from ``argv``,
    ``defaults`` (the recipe) filling what is not given.

    The default output folder, ``outputs/<data>-<folder_suffix>``, depends on the data flags, so it
    goes in front of the user's flags (a given ``--output_dir`` comes later and wins); transformers
    4.x requires the flag, so a parser default would not do.
    """
    argv = [str(arg) for arg in (sys.argv[1:] if argv is None else argv)]
    data_args, _ = HfArgumentParser(ImageDataArguments, add_help=False).parse_args_into_dataclasses(
        args=argv, return_remaining_strings=True)
    parser = HfArgumentParser(dataclass_types)
    parser.set_defaults(**defaults)
    parsed = parser.parse_args_into_dataclasses(
        args=[f"--output_dir=outputs/{dataset_label(data_args)}-{folder_suffix}", *argv])
    for args in parsed:
        if isinstance(args, TrainingArguments) and args.fsdp and args.device.type == "cpu":
            # accelerate enables FSDP only on accelerators: on CPU the Trainer would train plain
            # DistributedDataParallel, every process holding the whole model, without a word.
            raise ValueError("--fsdp shards only on accelerators (GPUs), and this run is on the CPU: drop --fsdp "
                             "to train data-parallel on CPU processes (torchrun, gloo).")
    return parsed


# data


def load_digits_dataset():
    """scikit-learn's 1,797 8x8 handwritten digits as a ``Dataset`` of grayscale PIL images and a ``ClassLabel``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    # The scans hold 0..16 ink levels; stretch them to 8-bit gray.
    pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)
    features = Features({"image": Image(), "label": ClassLabel(names=[str(d) for d in range(10)])})
    return Dataset.from_dict({"image": [PIL.Image.fromarray(p) for p in pixels], "label": digits.target.tolist()},
                             features=features)


def load_raw_datasets(data_args):
    """A ``DatasetDict`` from ``--dataset_name``, ``--train_dir``/``--validation_dir`` or the embedded digits."""
    if data_args.dataset_name and data_args.train_dir:
        raise ValueError("give either --dataset_name or --train_dir, not both")
    if data_args.dataset_name:
        return load_dataset(data_args.dataset_name, data_args.dataset_config_name)
    if data_args.train_dir:
        data_files = {}
        for split, folder in (("train", data_args.train_dir), ("validation", data_args.validation_dir)):
            if folder is None:
                continue
            flag = "--train_dir" if split == "train" else "--validation_dir"
            if not Path(folder).is_dir():
                raise ValueError(f"{flag} {folder!r} is not a folder")
            extensions = PIL.Image.registered_extensions()
            if not any(path.suffix.lower() in extensions for path in Path(folder).rglob("*") if path.is_file()):
                raise ValueError(f"{flag} {folder!r} holds no image files: the {split} split would be empty")
            data_files[split] = os.path.join(folder, "**")
        return load_dataset("imagefolder", data_files=data_files)
    if data_args.validation_dir:
        raise ValueError("--validation_dir needs --train_dir")
    return DatasetDict(train=load_digits_dataset())


def find_columns(features, image_column=None, label_column=None, labels_required=True):
    """The image and label column names: the ones given (checked), else detected from the features.

    Without ``labels_required`` a dataset with no label column gives ``None`` for it (images alone).
    """
    names = list(features)
    if image_column is None:
        image_column = next((name for name in names if isinstance(features[name], Image)), None)
        if image_column is None:
            raise ValueError(f"no image column found among {names}; name it with --image_column_name")
    elif image_column not in features:
        raise ValueError(f"--image_column_name {image_column!r} is not a column; the columns are {names}")
    elif not isinstance(features[image_column], Image):
        raise ValueError(f"--image_column_name {image_column!r} holds {features[image_column]}, not images")
    if label_column is None:
        label_column = next((name for name in names if isinstance(features[name], ClassLabel)), None) \
            or next((name for name in ("label", "labels") if name in features), None)
        if label_column is None and labels_required:
            raise ValueError(f"no label column found among {names}; name it with --label_column_name")
    elif label_column not in features:
        raise ValueError(f"--label_column_name {label_column!r} is not a column; the columns are {names}")
    return image_column, label_column


def split_train_eval(raw, label_column, validation_split):
    """``(train, eval, eval split name)``: the dataset's own eval split, else a fixed share of train, stratified
    by ``label_column`` when it holds a ``ClassLabel``."""
    train = raw["train"]
    eval_split = next((name for name in EVAL_SPLITS if name in raw), None)
    if eval_split is not None:
        return train, raw[eval_split], eval_split
    if not 0.0 < validation_split < 1.0:
        raise ValueError(f"--validation_split must be in (0, 1) when the dataset has no eval split, "
                         f"got {validation_split!r}")
    if len(train) < 2:
        raise ValueError(f"split 'train' has {len(train)} examples; at least 2 are needed to hold some out")
    stratify = label_column if label_column and isinstance(train.features[label_column], ClassLabel) else None
    parts = train.train_test_split(test_size=validation_split, stratify_by_column=stratify, seed=SPLIT_SEED)
    return parts["train"], parts["test"], "test"


def label_names(train, eval_dataset, label_column, pretrained_id2label=None):
    """``(train, eval, id2label)``: names from a ``ClassLabel``, from string labels, or for plain class ids.

    Plain integer ids keep a pretrained model's names when there is one, else are named by their number.
    """
    feature = train.features[label_column]
    if isinstance(feature, ClassLabel):
        return train, eval_dataset, dict(enumerate(feature.names))
    values = list(train[label_column]) + list(eval_dataset[label_column])
    if all(isinstance(value, str) for value in values):
        names = sorted(set(values))
        label = ClassLabel(names=names)
        train, eval_dataset = (d.cast_column(label_column, label) for d in (train, eval_dataset))
        return train, eval_dataset, dict(enumerate(names))
    if not all(isinstance(value, (int, np.integer)) and not isinstance(value, bool) for value in values):
        raise ValueError(f"label column {label_column!r} must hold class ids or class names, got {feature}")
    if pretrained_id2label:
        return train, eval_dataset, {int(k): v for k, v in pretrained_id2label.items()}
    return train, eval_dataset, {i: str(i) for i in range(max(values, default=-1) + 1)}


def open_image(value, where):
    """An undecoded ``Image`` value (``{"bytes", "path"}``) as a loaded PIL image; ``ValueError`` naming the file."""
    path = value.get("path")
    try:
        image = PIL.Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") else path)
        image.load()
    except Exception as error:  # any decoder failure means the same thing: this file is unusable
        raise ValueError(f"cannot read image {path or where!r} ({where}): {error}") from error
    return image


def check_dataset(dataset, split, image_column, label_column=None, id2label=None, check_images=True):
    """Raise ``ValueError`` for an empty split, a label id outside ``id2label`` (with a ``label_column``) or
    (optionally) an unreadable image."""
    if len(dataset) == 0:
        raise ValueError(f"split {split!r} is empty: there is nothing to train or evaluate on")
    if label_column is not None:
        labels = np.asarray(list(dataset[label_column]))
        bad = np.flatnonzero((labels < 0) | (labels >= len(id2label)))
        if bad.size:
            row = int(bad[0])
            raise ValueError(
                f"label column {label_column!r} of split {split!r} holds id {int(labels[row])} at row {row}, "
                f"outside id2label (ids 0..{len(id2label) - 1}: {list(id2label.values())[:10]}); {bad.size} rows "
                f"are affected"
            )
    if check_images:  # in batches: a large dataset's images do not fit in memory at once
        rows = dataset.select_columns([image_column]).iter(batch_size=256)
        for start, batch in zip(range(0, len(dataset), 256), rows):
            for row, value in enumerate(batch[image_column], start):
                open_image(value, f"split {split!r}, row {row}, column {image_column!r}")


def prepare_splits(raw, data_args, labels_required=True):
    """``(train, eval, eval split name, image column, label column)`` from a raw ``DatasetDict``, the
    ``--max_*_samples`` applied; the label column is ``None`` where the data has none and none is required.

    Images stay undecoded (``Image(decode=False)``): the transforms decode them, so a bad file
    is reported by name.
    """
    if "train" not in raw:
        raise ValueError(f"the dataset has no 'train' split; its splits are {list(raw)}")
    image_column, label_column = find_columns(raw["train"].features, data_args.image_column_name,
                                              data_args.label_column_name, labels_required)
    if len(raw["train"]) == 0:
        raise ValueError("split 'train' is empty: there is nothing to train on")
    train, eval_dataset, eval_split = split_train_eval(raw, label_column, data_args.validation_split)
    if data_args.max_train_samples is not None:
        train = train.select(range(min(data_args.max_train_samples, len(train))))
    if data_args.max_eval_samples is not None:
        eval_dataset = eval_dataset.select(range(min(data_args.max_eval_samples, len(eval_dataset))))
    train, eval_dataset = (d.cast_column(image_column, Image(decode=False)) for d in (train, eval_dataset))
    return train, eval_dataset, eval_split, image_column, label_column


def image_resolution(dataset, image_column):
    """The longest side of the first image, in pixels: what the fresh model's sizes are chosen by."""
    return max(open_image(dataset[0][image_column], f"split 'train', row 0, column {image_column!r}").size)


def stratified_subset(dataset, label_column, fraction=None, samples=None):
    """``dataset`` cut to ``samples`` examples, or ``fraction`` of them (rounded), with every class's share kept.

    Each class gets its proportional count rounded down, and the examples still missing go to the
    classes with the largest remainders; the examples are drawn at random with a fixed seed, so the
    subset is the same whatever the training seed. Row order is kept.
    """
    if fraction is None and samples is None:
        return dataset
    flag = f"--train_samples {samples}" if samples is not None else f"--train_fraction {fraction}"
    labels = np.asarray(dataset[label_column])
    classes, counts = np.unique(labels, return_counts=True)
    wanted = samples if samples is not None else round(fraction * len(labels))
    if not 1 <= wanted <= len(labels):
        raise ValueError(f"{flag} asks for {wanted} of the {len(labels)} training examples; a subset takes "
                         f"between 1 and {len(labels)}")
    shares = counts * wanted / len(labels)
    taken = np.floor(shares).astype(int)
    taken[np.argsort(taken - shares, kind="stable")[: wanted - taken.sum()]] += 1
    rng = np.random.default_rng(SPLIT_SEED)
    rows = [rng.choice(np.flatnonzero(labels == label), size=n, replace=False) for label, n in zip(classes, taken)]
    return dataset.select(np.sort(np.concatenate(rows)).tolist())


def prepare_data(raw, data_args, pretrained_id2label=None):
    """Columns, splits and label names from a raw ``DatasetDict``, checked before any training starts; the
    training split cut to ``--train_fraction`` / ``--train_samples`` (after ``--max_train_samples``)."""
    train, eval_dataset, eval_split, image_column, label_column = prepare_splits(raw, data_args)
    train, eval_dataset, id2label = label_names(train, eval_dataset, label_column, pretrained_id2label)
    train = stratified_subset(train, label_column, data_args.train_fraction, data_args.train_samples)
    for dataset, split in ((train, "train"), (eval_dataset, eval_split)):
        check_dataset(dataset, split, image_column, label_column, id2label, data_args.check_images)
    return PreparedData(train, eval_dataset, eval_split, image_column, label_column, id2label,
                        image_resolution(train, image_column))


def random_affine(pixel_values, max_rotation, max_shift, max_scale):
    """Each image of a (batch, channels, height, width) tensor rotated, shifted and zoomed at random.

    Edges are repeated into the uncovered border, so a digit's dark background stays dark.
    """
    n = pixel_values.shape[0]
    angle = (torch.rand(n) * 2 - 1) * math.radians(max_rotation)
    scale = 1 + (torch.rand(n) * 2 - 1) * max_scale
    shift = (torch.rand(n, 2) * 2 - 1) * (2 * max_shift)  # grid coordinates span 2 per image side
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack((torch.stack((cos, -sin, shift[:, 0]), 1), torch.stack((sin, cos, shift[:, 1]), 1)), 1)
    grid = F.affine_grid(theta, list(pixel_values.shape), align_corners=False)
    return F.grid_sample(pixel_values, grid, mode="bilinear", padding_mode="border", align_corners=False)


class ImageTransform:
    """``Dataset.with_transform`` callable: undecoded images -> ``pixel_values`` (+ augmentation), labels -> ``labels``
    (none without a ``label_column``)."""

    def __init__(self, processor, image_column, label_column=None, augment=None):
        self.processor, self.image_column, self.label_column = processor, image_column, label_column
        self.augment = augment

    def __call__(self, batch):
        images = [open_image(value, f"column {self.image_column!r}") for value in batch[self.image_column]]
        pixel_values = self.processor(images, return_tensors="pt")["pixel_values"]
        if self.augment is not None:
            pixel_values = random_affine(pixel_values, **self.augment)
        if self.label_column is None:
            return {"pixel_values": pixel_values}
        return {"pixel_values": pixel_values, "labels": torch.as_tensor(batch[self.label_column])}


# model


def vit_config(sizes, num_landmarks=None, **options):
    """The config of a fresh ViT with the given sizes; ``options`` are further ``VitxConfig`` fields."""
    return VitxConfig(**sizes, **options)


def landmark_config(sizes, num_landmarks=None, **options):
    """The ViT with the landmark (Nystrom) encoder; by default a landmark per 4 tokens, at most 256."""
    landmarks = {"num_landmarks": num_landmarks or min(256, max(1, VitxConfig(**sizes).num_patches // 4))}
    return VitxConfig(**sizes, **options, encoder="landmark", encoder_kwargs=landmarks)


def crossvit_config(sizes, num_landmarks=None, **options):
    """A CrossViT from the same sizes: small patches at ``dim``, patches twice as large at ``2 * dim``,
    ``depth // 2`` multi-scale blocks (each: 1 small and 2 large layers, then a cross-attention round)."""
    dim, heads, dim_head = sizes["dim"], sizes["heads"], sizes["dim_head"]
    return CrossVitxConfig(
        image_size=sizes["image_size"], depth=max(1, sizes["depth"] // 2),
        sm_dim=dim, sm_patch_size=sizes["patch_size"], sm_enc_depth=1, sm_enc_heads=heads,
        sm_enc_mlp_dim=sizes["mlp_dim"], sm_enc_dim_head=dim_head,
        lg_dim=2 * dim, lg_patch_size=2 * sizes["patch_size"], lg_enc_depth=2, lg_enc_heads=heads,
        lg_enc_mlp_dim=2 * sizes["mlp_dim"], lg_enc_dim_head=dim_head,
        cross_attn_depth=1, cross_attn_heads=heads, cross_attn_dim_head=dim_head,
        dropout=sizes["dropout"], emb_dropout=sizes["emb_dropout"], **options)


# Fresh-model families by --model_type: each takes (sizes, num_landmarks, **config options) and returns a config.
CONFIG_FACTORIES = {"vit": vit_config, "landmark": landmark_config, "crossvit": crossvit_config}


def model_sizes(model_args, resolution):
    """The preset for ``resolution`` with every size flag the user gave applied on top."""
    preset = next(sizes for limit, sizes in SIZE_PRESETS if limit is None or resolution <= limit)
    given = {name: getattr(model_args, name) for name in ("image_size", "patch_size", "dim", "depth", "heads",
                                                          "dim_head", "mlp_dim", "pool")}
    return {**preset, **{k: v for k, v in given.items() if v is not None},
            "dropout": model_args.dropout, "emb_dropout": model_args.emb_dropout}


def fresh_config(model_args, resolution, **options):
    """The config of a fresh ``--model_type`` model sized for images of ``resolution``; ``options`` are further
    config fields."""
    if model_args.model_type not in CONFIG_FACTORIES:
        raise ValueError(f"--model_type {model_args.model_type!r} is not supported; choose one of "
                         f"{sorted(CONFIG_FACTORIES)}")
    sizes = model_sizes(model_args, resolution)
    return CONFIG_FACTORIES[model_args.model_type](sizes, model_args.num_landmarks, **options)


def build_model(model_args, data):
    """``(model, processor)``: the saved model under new labels, or a fresh one of ``--model_type``."""
    label2id = {name: i for i, name in data.id2label.items()}
    if model_args.model_name_or_path:
        model = AutoModelForImageClassification.from_pretrained(
            model_args.model_name_or_path, num_labels=len(data.id2label), id2label=data.id2label, label2id=label2id,
            ignore_mismatched_sizes=True, trust_remote_code=model_args.trust_remote_code)
        processor = load_image_processor(model_args.model_name_or_path, model.config, model_args.trust_remote_code)
        return model, processor
    config = fresh_config(model_args, data.resolution, id2label=data.id2label)
    model = AutoModelForImageClassification.from_config(config)
    return model, default_image_processor(model.config.image_size, model.config.channels)


# training


def classification_metrics(eval_pred):
    """Accuracy, and top-5 accuracy when there are more than 5 classes, computed locally."""
    logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
    labels = eval_pred.label_ids
    metrics = {"accuracy": float((logits.argmax(-1) == labels).mean())}
    if logits.shape[-1] > 5:
        top5 = np.argpartition(-logits, 5, axis=-1)[:, :5]
        metrics["top5_accuracy"] = float((top5 == labels[:, None]).any(-1).mean())
    return metrics


def configure_threads(dataloader_num_workers):
    """Compute threads: this process's share of the visible cores, less one core per data-loading worker.

    torchrun's processes split the cores instead of oversubscribing them, and the workers that
    decode and augment images keep a core of their own; ``OMP_NUM_THREADS``, when set, decides.
    """
    if "OMP_NUM_THREADS" in os.environ:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    share = cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, share - dataloader_num_workers))


def resolve_checkpoint(value, output_dir):
    """``--resume_from_checkpoint``: a checkpoint folder, or 'last'/'true' for the newest complete one in output_dir.

    A checkpoint is complete once its ``trainer_state.json`` is written (the Trainer writes it last),
    so a run killed while saving resumes from the checkpoint before.
    """
    if value is None or value.lower() not in ("last", "true"):
        return value
    folders = Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*")
    complete = [f for f in folders if (f / "trainer_state.json").is_file() and f.name.split("-")[-1].isdigit()]
    if not complete:
        raise ValueError(f"--resume_from_checkpoint {value}: no complete checkpoint in {output_dir!r}")
    return str(max(complete, key=lambda f: int(f.name.split("-")[-1])))


def copy_remote_code(model, output_dir):
    """Put the model's code files in ``output_dir`` before training.

    The Trainer's pushes during training upload ``output_dir`` with only the weights and config
    copied from the latest checkpoint; with the code files already there every pushed revision
    loads with ``trust_remote_code=True``.
    """
    if getattr(type(model), "_auto_class", None) is None:  # a model of transformers itself has no code to ship
        return
    os.makedirs(output_dir, exist_ok=True)
    for module in {type(model).__module__, type(model.config).__module__}:
        shutil.copy(sys.modules[module].__file__, output_dir)


def plot_history(log_history, path):
    """Train/eval loss and eval accuracy against epochs from the Trainer's ``log_history``, as a PNG."""
    def series(key):
        points = [(entry["epoch"], entry[key]) for entry in log_history if key in entry and "epoch" in entry]
        return tuple(zip(*points)) if points else ((), ())

    figure = Figure(figsize=(10, 4), layout="constrained")
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    for key, label in (("loss", "train loss"), ("eval_loss", "eval loss")):
        loss_axes.plot(*series(key), label=label, marker="." if key == "eval_loss" else None)
    for key, label in (("eval_accuracy", "eval accuracy"), ("eval_top5_accuracy", "eval top-5 accuracy")):
        if series(key)[0]:
            accuracy_axes.plot(*series(key), label=label, marker=".")
    for axes, title in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        axes.set_xlabel("epoch")
        axes.set_title(title)
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend()
    figure.savefig(path, dpi=100)


def save_and_report(trainer, card, summary, start):
    """Save the output folder with its model card (``card``: ``create_model_card``'s arguments), or with
    ``--push_to_hub`` push it, then print ``summary`` with the wall time since ``start`` (main process only).

    ``push_to_hub`` saves the model and writes the card itself, so the one upload holds the finished folder.
    """
    if trainer.args.push_to_hub:
        trainer.push_to_hub(**card)
    else:
        trainer.save_model()
        trainer.create_model_card(**card)
    if trainer.is_world_process_zero():
        print(f"{summary}, {time.perf_counter() - start:.0f} s wall time on {trainer.args.world_size} process(es); "
              f"model in {trainer.args.output_dir}")


def augmentation(data_args):
    """``ImageTransform``'s ``augment`` from the data flags: the affine ranges, or None with ``--augment false``."""
    if not data_args.augment:
        return None
    return dict(max_rotation=data_args.max_rotation, max_shift=data_args.max_shift, max_scale=data_args.max_scale)


def main(argv=None):
    """Train, evaluate, save (and with ``--push_to_hub`` push) a vitx classifier; returns the eval metrics."""
    start = time.perf_counter()
    model_args, data_args, training_args = parse_args(argv)
    configure_threads(training_args.dataloader_num_workers)
    set_seed(training_args.seed)
    pretrained_id2label = None
    if model_args.model_name_or_path:
        pretrained_id2label = AutoConfig.from_pretrained(model_args.model_name_or_path,
                                                         trust_remote_code=model_args.trust_remote_code).id2label
    data = prepare_data(load_raw_datasets(data_args), data_args, pretrained_id2label)
    model, processor = build_model(model_args, data)
    if not model_args.model_name_or_path:
        # The Trainer's model card calls a model fine-tuned from its `name_or_path` unless that is
        # a folder; a fresh model is named after the folder it is trained into.
        model.config.name_or_path = training_args.output_dir
    augment = augmentation(data_args)
    trainer = Trainer(
        model=model, args=training_args, processing_class=processor, compute_metrics=classification_metrics,
        train_dataset=data.train.with_transform(ImageTransform(processor, data.image_column, data.label_column,
                                                               augment)),
        eval_dataset=data.eval.with_transform(ImageTransform(processor, data.image_column, data.label_column)),
    )
    if training_args.push_to_hub and trainer.is_world_process_zero():
        copy_remote_code(model, training_args.output_dir)
    checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()
    metrics = trainer.evaluate()
    trainer.save_metrics("eval", metrics)
    name = dataset_label(data_args)
    if trainer.is_world_process_zero():
        plot_history(trainer.state.log_history, os.path.join(training_args.output_dir, CURVES_NAME))
    save_and_report(trainer, dict(finetuned_from=model_args.model_name_or_path, tasks="image-classification",
                                  dataset=name, tags=["image-classification", "vitx"]),
                    f"vitx: {name} {data.eval_split} accuracy {metrics['eval_accuracy']:.2%} on {len(data.eval)} "
                    f"images", start)
    return metrics


if __name__ == "__main__":
    main()
