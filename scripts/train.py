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

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from datasets import ClassLabel, Dataset
from matplotlib.figure import Figure
from sklearn.metrics import accuracy_score, top_k_accuracy_score
from transformers import AutoConfig, AutoModelForImageClassification, TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import modeling_vitx  # noqa: E402,F401  (registers vitx with the Auto classes)
from vitx_common import (SPLIT_SEED, ImageDataArguments, ImageTransform, ModelArguments, augmentation,  # noqa: E402
                         check_dataset, dataset_label, default_image_processor, fresh_config, image_resolution,
                         load_image_processor, load_raw_datasets, make_trainer, parse_script_args, prepare_splits,
                         save_and_report, start_run, train_and_evaluate)

# The recipe, as TrainingArguments defaults; any flag given on the command line wins. What depends on the data
# (epochs, learning rate, warm-up, evaluations, augmentation) is chosen by ``data_recipe`` once it is loaded.
TRAINING_DEFAULTS = {
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 256,
    "weight_decay": 0.05,
    "lr_scheduler_type": "cosine",
    "label_smoothing_factor": 0.1,
    "eval_strategy": "steps",
    "save_strategy": "steps",
    "save_steps": 0.05,  # 20 checkpoints per run (the last two kept): a killed run loses at most 5% of its steps
    "save_total_limit": 2,
    "logging_strategy": "steps",
    "logging_steps": 10,
    "dataloader_num_workers": 1,  # images are decoded and augmented beside the training loop
    "dataloader_persistent_workers": True,  # small datasets run many short epochs: no worker start-up each
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
CURVES_NAME = "training_curves.png"

# The data-dependent recipe (``data_recipe``), measured on scikit-learn's digits (1,437 training images) and on
# MNIST (60,000): docs/training.md, "The recipe".
SMALL_DATASET = 10_000  # fewer training images: augmentation and a higher learning rate
TARGET_STEPS = 1_500  # optimizer steps a default run takes, within MIN_EPOCHS..MAX_EPOCHS
MIN_EPOCHS, MAX_EPOCHS = 2, 300
MAX_EVALUATIONS = 20
EVAL_SHARE = 0.1  # evaluations may cost at most this share of the training: an image costs a third to evaluate
RECIPE_FLAGS = ("num_train_epochs", "learning_rate", "warmup_steps", "eval_steps")


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


def parse_args(argv=None):
    """``(ModelArguments, DataArguments, TrainingArguments)`` from ``argv``, the recipe (``TRAINING_DEFAULTS``)
    filling what is not given; by default the run goes to ``outputs/<data>-vitx``."""
    return parse_script_args(argv, (ModelArguments, DataArguments, TrainingArguments), TRAINING_DEFAULTS, "vitx")


def given_flags(argv=None):
    """The option names given on the command line (``--name value``, ``--name=value``, dashes or underscores)."""
    argv = sys.argv[1:] if argv is None else argv
    return {str(arg)[2:].split("=")[0].replace("-", "_") for arg in argv if str(arg).startswith("--")}


def data_recipe(train_size, eval_size, batch_size, epochs=None):
    """The ``TrainingArguments`` values that depend on the data, and whether to augment, for ``train_size``
    training and ``eval_size`` evaluation images in batches of ``batch_size`` (over every process and
    accumulation step), over ``epochs`` (a number given, else the recipe's).

    About ``TARGET_STEPS`` optimizer steps: the digits' 1,437 images get 34 epochs, MNIST's 60,000 two. Small
    datasets (under ``SMALL_DATASET`` images) train at 2e-3 with the mild affine augmentation against
    overfitting; large ones at 5e-4 (many more steps) without, which in two epochs only slows them. Warm-up is
    5% of the steps. Evaluations are spaced to cost at most ``EVAL_SHARE`` of the training time, up to 20: every
    5% of a run on the digits, three on MNIST's 10,000 test images rather than twenty; at least two, as a share
    of the run (a share of 1 would read as every step)."""
    steps_per_epoch = math.ceil(train_size / batch_size)
    if epochs is None:
        epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(TARGET_STEPS / steps_per_epoch)))
    small = train_size < SMALL_DATASET
    evaluations = int(EVAL_SHARE * 3 * train_size * epochs / max(1, eval_size))
    return {"num_train_epochs": epochs, "learning_rate": 2e-3 if small else 5e-4,
            "warmup_steps": max(1, round(0.05 * epochs * steps_per_epoch)),
            "eval_steps": 1 / max(2, min(MAX_EVALUATIONS, evaluations)), "augment": small}


def apply_data_recipe(training_args, data_args, given, train_size, eval_size):
    """Fill what the command line did not ``given`` (``RECIPE_FLAGS``, ``--augment``) from ``data_recipe``."""
    batch = (training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
             * max(1, training_args.world_size))
    epochs = None  # warm-up and evaluations follow the run's length where the command line sets it
    if training_args.max_steps > 0:
        epochs = training_args.max_steps / math.ceil(train_size / batch)
    elif "num_train_epochs" in given:
        epochs = training_args.num_train_epochs
    recipe = data_recipe(train_size, eval_size, batch, epochs)
    for name in RECIPE_FLAGS:
        if name not in given:
            setattr(training_args, name, recipe[name])
    if data_args.augment is None:
        data_args.augment = recipe["augment"]
    return recipe


# data


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


# model


def build_model(model_args, data):
    """``(model, processor)``: the saved model under new labels, or a fresh one of ``--model_type``."""
    label2id = {name: i for i, name in data.id2label.items()}
    if model_args.model_name_or_path:
        model = AutoModelForImageClassification.from_pretrained(
            model_args.model_name_or_path, num_labels=len(data.id2label), id2label=data.id2label, label2id=label2id,
            ignore_mismatched_sizes=True, trust_remote_code=model_args.trust_remote_code)
        processor = load_image_processor(model_args.model_name_or_path, model.config, model_args.trust_remote_code)
        return model, processor
    config = fresh_config(model_args, data.resolution, SIZE_PRESETS, id2label=data.id2label)
    model = AutoModelForImageClassification.from_config(config)
    return model, default_image_processor(model.config.image_size, model.config.channels)


# training


def classification_metrics(eval_pred):
    """Accuracy, and top-5 accuracy when there are more than 5 classes (scikit-learn's, computed locally)."""
    logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
    labels = eval_pred.label_ids
    metrics = {"accuracy": float(accuracy_score(labels, logits.argmax(-1)))}
    if logits.shape[-1] > 5:
        metrics["top5_accuracy"] = float(top_k_accuracy_score(labels, logits, k=5,
                                                              labels=np.arange(logits.shape[-1])))
    return metrics


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


def main(argv=None):
    """Train, evaluate, save (and with ``--push_to_hub`` push) a vitx classifier; returns the eval metrics."""
    start = time.perf_counter()
    model_args, data_args, training_args = parse_args(argv)
    start_run(training_args)
    pretrained_id2label = None
    if model_args.model_name_or_path:
        pretrained_id2label = AutoConfig.from_pretrained(model_args.model_name_or_path,
                                                         trust_remote_code=model_args.trust_remote_code).id2label
    data = prepare_data(load_raw_datasets(data_args), data_args, pretrained_id2label)
    apply_data_recipe(training_args, data_args, given_flags(argv), len(data.train), len(data.eval))
    model, processor = build_model(model_args, data)
    trainer = make_trainer(
        model, training_args, model_args.model_name_or_path, processing_class=processor,
        compute_metrics=classification_metrics,
        train_dataset=data.train.with_transform(ImageTransform(processor, data.image_column, data.label_column,
                                                               augmentation(data_args))),
        eval_dataset=data.eval.with_transform(ImageTransform(processor, data.image_column, data.label_column)),
    )
    metrics = train_and_evaluate(trainer)
    name = dataset_label(data_args)
    if trainer.is_world_process_zero():
        plot_history(trainer.state.log_history, os.path.join(training_args.output_dir, CURVES_NAME))
    save_and_report(trainer, metrics, dict(finetuned_from=model_args.model_name_or_path,
                                           tasks="image-classification", dataset=name,
                                           tags=["image-classification", "vitx"]),
                    f"vitx: {name} {data.eval_split} accuracy {metrics['eval_accuracy']:.2%} on {len(data.eval)} "
                    f"images", start)
    return metrics


if __name__ == "__main__":
    main()
