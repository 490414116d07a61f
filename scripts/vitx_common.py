"""What the scripts share: image processors, the converters' weight naming and folder writing, and the runs of
the training scripts (``train.py``, ``pretrain.py``, ``train_segmentation.py``): their model and data flags,
the data loading and checks, fresh model configs, and the Trainer run from setup to the saved folder and its
summary line; the default image processors (classification, segmentation).

The scripts import it as a sibling module: ``python scripts/<name>.py`` puts ``scripts/`` first on
``sys.path``, and the tests add it through pytest's ``pythonpath``. Each script keeps its own recipe (its
``TrainingArguments`` defaults and fresh-model sizes) and passes it in.
"""

import math
import numbers
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, load_dataset
from transformers import (AutoImageProcessor, HfArgumentParser, SegformerImageProcessor, Trainer, TrainingArguments,
                          ViTImageProcessor, set_seed)
from transformers.dynamic_module_utils import custom_object_save
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from configuration_vitx import CrossVitxConfig, VitxConfig, _to_pair

SPLIT_SEED = 0  # held-out splits and subsets made here are the same whatever the training seed
EVAL_SPLITS = ("validation", "valid", "val", "test")

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
                  f"defaults (mean and std 0.5) at the model's image size", stacklevel=2)
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


# command line


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
    augment: Optional[bool] = field(default=None, metadata={
        "help": "Random affine augmentation of training images (default: the script's choice; train.py augments "
                "datasets under 10,000 images)."})
    max_rotation: float = field(default=5.0, metadata={"help": "Augmentation: largest rotation, degrees."})
    max_shift: float = field(default=0.05, metadata={"help": "Augmentation: largest shift, share of the image side."})
    max_scale: float = field(default=0.05, metadata={"help": "Augmentation: largest zoom in or out, share."})


def dataset_label(data_args):
    """A short name for the data: 'digits', the dataset id's last part, or the train folder's name."""
    if data_args.dataset_name:
        return Path(data_args.dataset_name.rstrip("/")).name
    if data_args.train_dir:
        return Path(data_args.train_dir.rstrip("/")).resolve().parent.name or "images"
    return "digits"


def parse_script_args(argv, dataclass_types, defaults, folder_suffix):
    """A training script's ``dataclass_types`` (``ImageDataArguments`` or a subclass among them, and
    ``TrainingArguments``) from ``argv`` (``sys.argv[1:]`` when ``None``), ``defaults`` (the script's recipe,
    ``TrainingArguments`` values) filling what is not given.

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


def check_image_folder(flag, folder, split):
    """Raise ``ValueError`` naming ``flag`` unless ``folder`` is a folder with an image file in it (at any depth,
    by PIL's file extensions), before ``datasets`` makes an empty ``split`` of it."""
    if not Path(folder).is_dir():
        raise ValueError(f"{flag} {folder!r} is not a folder")
    extensions = PIL.Image.registered_extensions()
    if not any(path.suffix.lower() in extensions for path in Path(folder).rglob("*") if path.is_file()):
        raise ValueError(f"{flag} {folder!r} holds no image files: the {split} split would be empty")


def load_raw_datasets(data_args):
    """A ``DatasetDict`` from ``--dataset_name``, ``--train_dir``/``--validation_dir`` or the embedded digits."""
    if data_args.dataset_name and data_args.train_dir:
        raise ValueError("give either --dataset_name or --train_dir, not both")
    if data_args.dataset_name:
        return load_dataset(data_args.dataset_name, data_args.dataset_config_name)
    if data_args.train_dir:
        data_files = {}
        for split, flag, folder in (("train", "--train_dir", data_args.train_dir),
                                    ("validation", "--validation_dir", data_args.validation_dir)):
            if folder is not None:
                check_image_folder(flag, folder, split)
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


def open_image(value, where):
    """An undecoded ``Image`` value (``{"bytes", "path"}``) decoded as ``datasets`` decodes it (loaded, turned
    upright by its EXIF orientation); a ``ValueError`` naming the file (or ``where``) if it cannot be."""
    try:
        return Image().decode_example(value)
    except Exception as error:  # any decoder failure means the same thing: this file is unusable
        raise ValueError(f"cannot read image {value.get('path') or where!r} ({where}): {error}") from error


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


def random_affine(pixel_values, max_rotation, max_shift, max_scale):
    """Each image of a (batch, channels, height, width) tensor rotated, shifted and zoomed at random.

    Edges are repeated into the uncovered border, so a digit's dark background stays dark. (torchvision's
    ``RandomAffine`` draws one transform per call and fills the border with a constant.)
    """
    n = pixel_values.shape[0]
    angle = (torch.rand(n) * 2 - 1) * math.radians(max_rotation)
    scale = 1 + (torch.rand(n) * 2 - 1) * max_scale
    shift = (torch.rand(n, 2) * 2 - 1) * (2 * max_shift)  # grid coordinates span 2 per image side
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack((torch.stack((cos, -sin, shift[:, 0]), 1), torch.stack((sin, cos, shift[:, 1]), 1)), 1)
    grid = F.affine_grid(theta, list(pixel_values.shape), align_corners=False)
    return F.grid_sample(pixel_values, grid, mode="bilinear", padding_mode="border", align_corners=False)


def augmentation(data_args, default=True):
    """``ImageTransform``'s ``augment`` from the data flags: the affine ranges, or None with ``--augment false``
    (``default`` when the flag is not given)."""
    if not (default if data_args.augment is None else data_args.augment):
        return None
    return dict(max_rotation=data_args.max_rotation, max_shift=data_args.max_shift, max_scale=data_args.max_scale)


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


# fresh models


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


def model_sizes(model_args, resolution, presets):
    """The first of ``presets`` (``(longest image side or None, sizes)`` pairs, smallest first) that fits
    ``resolution``, with every size flag the user gave applied on top."""
    preset = next(sizes for limit, sizes in presets if limit is None or resolution <= limit)
    given = {name: getattr(model_args, name) for name in ("image_size", "patch_size", "dim", "depth", "heads",
                                                          "dim_head", "mlp_dim", "pool")}
    return {**preset, **{k: v for k, v in given.items() if v is not None},
            "dropout": model_args.dropout, "emb_dropout": model_args.emb_dropout}


def fresh_config(model_args, resolution, presets, **options):
    """The config of a fresh ``--model_type`` model sized by ``presets`` (see ``model_sizes``) for images of
    ``resolution``; ``options`` are further config fields."""
    if model_args.model_type not in CONFIG_FACTORIES:
        raise ValueError(f"--model_type {model_args.model_type!r} is not supported; choose one of "
                         f"{sorted(CONFIG_FACTORIES)}")
    sizes = model_sizes(model_args, resolution, presets)
    return CONFIG_FACTORIES[model_args.model_type](sizes, model_args.num_landmarks, **options)


# training runs


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


def start_run(training_args):
    """What a run sets before it loads data or builds a model: the compute threads and the seed (and no persistent
    loader workers when there are none to keep)."""
    training_args.dataloader_persistent_workers &= training_args.dataloader_num_workers > 0
    configure_threads(training_args.dataloader_num_workers)
    set_seed(training_args.seed)


def copy_remote_code(model, output_dir):
    """Put the model's code files in ``output_dir`` before training, as ``save_pretrained`` writes them.

    The Trainer's pushes during training upload ``output_dir`` with only the weights and config
    copied from the latest checkpoint; with the code files already there every pushed revision
    loads with ``trust_remote_code=True``.
    """
    if getattr(type(model), "_auto_class", None) is None:  # a model of transformers itself has no code to ship
        return
    os.makedirs(output_dir, exist_ok=True)
    custom_object_save(model, output_dir)  # the modeling file and the files it imports relatively (the config's)


class CardSectionTrainer(Trainer):
    """The ``Trainer``, whose model card gets ``card_section`` appended (pretrain.py's reconstructions,
    train_segmentation.py's scores per class), also to the card ``push_to_hub`` uploads."""

    card_section = ""

    def create_model_card(self, *args, **kwargs):
        super().create_model_card(*args, **kwargs)
        if self.is_world_process_zero() and self.card_section:
            card = Path(self.args.output_dir) / "README.md"
            card.write_text(card.read_text().rstrip() + "\n\n" + self.card_section)


def make_trainer(model, training_args, fine_tuned_from=None, trainer_class=Trainer, **trainer_kwargs):
    """``trainer_class(model=model, args=training_args, **trainer_kwargs)`` under the output folder's rules.

    A fresh model (no ``fine_tuned_from``) is named after the folder it is trained into: the Trainer's
    model card calls a model fine-tuned from its ``name_or_path`` unless that is a folder. With
    ``--push_to_hub`` the model's code files go in the folder first, so every push loads as remote code.
    """
    if not fine_tuned_from:
        model.config.name_or_path = training_args.output_dir
    trainer = trainer_class(model=model, args=training_args, **trainer_kwargs)
    if training_args.push_to_hub and trainer.is_world_process_zero():
        copy_remote_code(model, training_args.output_dir)
    return trainer


def resolve_checkpoint(value, output_dir):
    """``--resume_from_checkpoint``: a checkpoint folder, or 'last'/'true' for the newest complete one in output_dir.

    A checkpoint is complete once its ``trainer_state.json`` is written (the Trainer writes it last),
    so a run killed while saving resumes from the checkpoint before. (transformers' ``get_last_checkpoint``
    takes the newest folder, complete or not, and the Trainer resumes from one without its state at step 0.)
    """
    if value is None or value.lower() not in ("last", "true"):
        return value
    folders = Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*")
    complete = [f for f in folders if (f / "trainer_state.json").is_file() and f.name.split("-")[-1].isdigit()]
    if not complete:
        raise ValueError(f"--resume_from_checkpoint {value}: no complete checkpoint in {output_dir!r}")
    return str(max(complete, key=lambda f: int(f.name.split("-")[-1])))


def train_and_evaluate(trainer):
    """Train (resumed as ``--resume_from_checkpoint`` says), save the train metrics and the Trainer's state, and
    return the evaluation's metrics."""
    args = trainer.args
    result = trainer.train(resume_from_checkpoint=resolve_checkpoint(args.resume_from_checkpoint, args.output_dir))
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    return trainer.evaluate()


def save_and_report(trainer, metrics, card, summary, start):
    """Save the eval ``metrics`` and the output folder with its model card (``card``: ``create_model_card``'s
    arguments), or with ``--push_to_hub`` push it, then print the summary line (main process only):
    ``summary``, the wall time since ``start`` (``time.perf_counter()``), the processes and the folder.

    ``push_to_hub`` saves the model and writes the card itself, so the one upload holds the finished folder.
    """
    trainer.save_metrics("eval", metrics)
    if trainer.args.push_to_hub:
        trainer.push_to_hub(**card)
    else:
        trainer.save_model()
        trainer.create_model_card(**card)
    if trainer.is_world_process_zero():
        print(f"{summary}, {time.perf_counter() - start:.0f} s wall time on {trainer.args.world_size} process(es); "
              f"model in {trainer.args.output_dir}")
