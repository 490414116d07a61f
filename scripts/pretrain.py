"""Pretrain a vitx ViT without labels, as a masked autoencoder (He et al., 2021), with the Hugging Face Trainer.

    python scripts/pretrain.py                                     # the digits' training images, offline
    python scripts/pretrain.py --train_dir my_images               # a folder of images, subfolders or not
    python scripts/pretrain.py --dataset_name cifar10 --model_type landmark --num_train_epochs 100
    python scripts/pretrain.py --model_name_or_path my-vit --train_dir my_images   # go on from a saved model
    torchrun --nproc_per_node 2 scripts/pretrain.py ...            # DistributedDataParallel

    python scripts/train.py --model_name_or_path outputs/digits-vitx-mae --train_fraction 0.1   # then fine-tune

The data flags and every ``TrainingArguments`` flag work as in ``scripts/train.py`` (``--push_to_hub``,
``--resume_from_checkpoint last`` after a kill, ...); labels are never read. With no data flags the
script pretrains on the training images of scikit-learn's digits, the very split ``scripts/train.py``
trains on: the held-out digits are never seen. ``--model_type vit|landmark`` (and the size flags)
build a fresh model; ``--model_name_or_path`` goes on from a saved vitx ViT. Each image hides
``--masking_ratio`` of its patches from the encoder; a light decoder (``--decoder_*``) reconstructs their
pixels. The output folder holds the safetensors weights, the config, ``preprocessor_config.json``, the
remote-code files, a model card saying what the model was pretrained on and how well it reconstructs
held-out images (beside predicting the mean patch), and ``reconstructions.png``: held-out images, their
masked input and the reconstruction. ``AutoModelForImageClassification.from_pretrained`` and
``scripts/train.py --model_name_or_path`` fine-tune it; the decoder is dropped there.
"""

import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch
from datasets import Dataset
from matplotlib.figure import Figure
from transformers import AutoConfig, AutoModelForPreTraining, TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import modeling_vitx  # noqa: E402,F401  (registers vitx with the Auto classes)
from train import SIZE_PRESETS, TRAINING_DEFAULTS  # noqa: E402  (the recipe pretraining starts from)
from vitx_common import (CardSectionTrainer, ImageDataArguments, ImageTransform, ModelArguments,  # noqa: E402
                         augmentation, check_dataset, dataset_label, default_image_processor, fresh_config, image_resolution, load_image_processor,
                         load_raw_datasets, make_trainer, parse_script_args, prepare_splits, save_and_report,
                         start_run, train_and_evaluate)

# The recipe, as TrainingArguments defaults (train.py's where pretraining has no reason to differ); any flag
# given on the command line wins.
PRETRAINING_DEFAULTS = {**TRAINING_DEFAULTS, "num_train_epochs": 40, "learning_rate": 1.5e-3, "warmup_steps": 50,
                        "eval_steps": 0.05,
                        "adam_beta2": 0.95, "label_smoothing_factor": 0.0}
# Masked autoencoder settings of a fresh model; a saved model keeps its config's unless a flag says otherwise.
MAE_DEFAULTS = dict(masking_ratio=0.75, decoder_dim=64, decoder_depth=1, decoder_heads=4, decoder_dim_head=16,
                    norm_pix_loss=False)
PRETRAINABLE = ("vit", "landmark")  # CrossViT's two streams have no pretraining head
RECONSTRUCTIONS_NAME = "reconstructions.png"
SHOWN_IMAGES = 8  # held-out images in the picture
MEAN_PATCH_IMAGES = 2048  # training images the baseline's mean patch is taken over


@dataclass
class MaskedAutoencoderArguments:
    """The pretraining task: how much to hide, and the decoder that reconstructs it (``VitxConfig`` fields)."""

    masking_ratio: Optional[float] = field(
        default=None, metadata={"help": f"Share of each image's patches hidden from the encoder, in (0, 1) "
                                        f"(fresh model: {MAE_DEFAULTS['masking_ratio']})."})
    decoder_dim: Optional[int] = field(
        default=None, metadata={"help": f"Width of the decoder (fresh model: {MAE_DEFAULTS['decoder_dim']})."})
    decoder_depth: Optional[int] = field(
        default=None, metadata={"help": f"Decoder blocks (fresh model: {MAE_DEFAULTS['decoder_depth']})."})
    decoder_heads: Optional[int] = field(
        default=None, metadata={"help": f"Decoder attention heads (fresh model: {MAE_DEFAULTS['decoder_heads']})."})
    decoder_dim_head: Optional[int] = field(
        default=None, metadata={"help": f"Width of each decoder head (fresh model: "
                                        f"{MAE_DEFAULTS['decoder_dim_head']})."})
    norm_pix_loss: Optional[bool] = field(
        default=None, metadata={"help": "Reconstruct each patch normalized by its own mean and variance "
                                        f"(fresh model: {MAE_DEFAULTS['norm_pix_loss']})."})


@dataclass
class PreparedImages:
    """Train and held-out images, checked and ready for transforms."""

    train: Dataset
    eval: Dataset
    eval_split: str
    image_column: str
    resolution: int


# data


def prepare_images(raw, data_args):
    """Train and held-out images from a raw ``DatasetDict``, checked before any training starts.

    Labels are not needed; where the data has them, they stratify the held-out share of train as in
    ``scripts/train.py``, so that both scripts hold out the same images.
    """
    train_images, eval_images, eval_split, image_column, _ = prepare_splits(raw, data_args, labels_required=False)
    for dataset, split in ((train_images, "train"), (eval_images, eval_split)):
        check_dataset(dataset, split, image_column, check_images=data_args.check_images)
    return PreparedImages(train_images, eval_images, eval_split, image_column,
                          image_resolution(train_images, image_column))


class FixedMasks:
    """``Dataset.with_transform`` callable for held-out images: ``ImageTransform``'s pixels, plus each row's masking
    noise drawn from its own seed (the ``row`` column), so every evaluation hides the same patches."""

    def __init__(self, transform, num_patches):
        self.transform, self.num_patches = transform, num_patches

    def __call__(self, batch):
        noise = [torch.rand(self.num_patches, generator=torch.Generator().manual_seed(row)) for row in batch["row"]]
        return {**self.transform(batch), "noise": torch.stack(noise)}


def held_out(dataset, processor, image_column, num_patches):
    """The held-out images as the model sees them in evaluation: pixels and fixed masking noise."""
    rows = dataset.add_column("row", list(range(len(dataset))))
    return rows.with_transform(FixedMasks(ImageTransform(processor, image_column), num_patches))


# model


def build_model(model_args, mae_args, resolution):
    """``(model, processor)``: a saved vitx ViT with its decoder (a new one if it has none), or a fresh one."""
    given = {name: value for name, value in asdict(mae_args).items() if value is not None}
    path = model_args.model_name_or_path
    if path:
        config = AutoConfig.from_pretrained(path, trust_remote_code=model_args.trust_remote_code)
        # rebuilt rather than passed to from_pretrained, whose overrides skip the config's checks
        config = type(config).from_dict({**config.to_dict(), **given})
        try:  # a decoder of another size than the saved one starts afresh
            model = AutoModelForPreTraining.from_pretrained(path, config=config, ignore_mismatched_sizes=True,
                                                            trust_remote_code=model_args.trust_remote_code)
        except ValueError as error:
            raise ValueError(f"--model_name_or_path {path!r} holds a {type(config).__name__} model, which has no "
                             f"masked autoencoder pretraining: it takes a vitx ViT, with the standard or landmark "
                             f"encoder ({str(error).splitlines()[0]})") from error
        return model, load_image_processor(path, model.config, model_args.trust_remote_code)
    if model_args.model_type not in PRETRAINABLE:
        raise ValueError(f"--model_type {model_args.model_type!r} cannot be pretrained: masked autoencoder "
                         f"pretraining takes the ViT with the standard or landmark encoder (--model_type "
                         f"{' or '.join(PRETRAINABLE)}); CrossViT's two streams have no pretraining head")
    config = fresh_config(model_args, resolution, SIZE_PRESETS, **{**MAE_DEFAULTS, **given})
    model = AutoModelForPreTraining.from_config(config)
    return model, default_image_processor(model.config.image_size, model.config.channels)


# evaluation


def reconstruction_target(model, pixel_values):
    """What the model learns to reconstruct: the patches, each normalized by itself with ``norm_pix_loss``."""
    patches = model.patchify(pixel_values)
    if not model.config.norm_pix_loss:
        return patches
    return (patches - patches.mean(-1, keepdim=True)) / (patches.var(-1, keepdim=True) + 1e-6).sqrt()


@torch.no_grad()
def reconstruction_losses(model, train_images, held_out_images):
    """Mean squared error over the hidden patches of ``held_out_images`` (with their fixed masks) of the model's
    reconstruction, and of two baselines: the mean patch of (up to ``MEAN_PATCH_IMAGES``) training images, and
    the mean of each image's own visible patches."""
    was_training, device = model.training, model.device
    model.eval()
    first_images = train_images.select(range(min(MEAN_PATCH_IMAGES, len(train_images))))
    mean_patch = torch.cat([reconstruction_target(model, batch["pixel_values"].to(device))
                            for batch in first_images.iter(batch_size=256)]).mean(dim=(0, 1))
    sums, hidden = {"loss": 0.0, "mean_patch_loss": 0.0, "visible_mean_loss": 0.0}, 0
    for batch in held_out_images.iter(batch_size=256):
        pixel_values = batch["pixel_values"].to(device)
        out = model(pixel_values=pixel_values, noise=batch["noise"].to(device))
        target, mask = reconstruction_target(model, pixel_values), out.mask.bool()
        visible = (~mask).unsqueeze(-1).to(target.dtype)
        visible_mean = (target * visible).sum(dim=1, keepdim=True) / visible.sum(dim=1, keepdim=True)
        for name, prediction in (("loss", out.logits), ("mean_patch_loss", mean_patch), ("visible_mean_loss",
                                                                                         visible_mean)):
            sums[name] += ((prediction - target) ** 2).mean(dim=-1)[mask].sum().item()
        hidden += mask.sum().item()
    model.train(was_training)
    return {name: total / hidden for name, total in sums.items()}


@torch.no_grad()
def plot_reconstructions(model, processor, held_out_images, path, count=SHOWN_IMAGES):
    """A PNG of the first ``count`` held-out images: the original, the masked input the encoder saw (hidden
    patches gray) and the reconstruction (the visible patches with the decoder's guess for the hidden ones)."""
    was_training = model.training
    model.eval()
    batch = held_out_images[:count]
    pixel_values = batch["pixel_values"].to(model.device)
    out = model(pixel_values=pixel_values, noise=batch["noise"].to(model.device))
    model.train(was_training)
    patches, predicted = model.patchify(pixel_values), out.logits
    if model.config.norm_pix_loss:  # the guess is in per-patch units: shown with the true patch's mean and spread
        predicted = predicted * (patches.var(-1, keepdim=True) + 1e-6).sqrt() + patches.mean(-1, keepdim=True)
    hidden = out.mask.bool().unsqueeze(-1)
    mean = torch.tensor(processor.image_mean, device=patches.device).view(1, -1, 1, 1)
    std = torch.tensor(processor.image_std, device=patches.device).view(1, -1, 1, 1)

    def shown(patch_values):
        return (model.unpatchify(patch_values) * std + mean).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()

    gray = ((0.5 - mean) / std).flatten().repeat(patches.shape[-1] // mean.numel())  # a patch that shows as gray
    rows = {"original": shown(patches),
            f"masked input ({model.config.masking_ratio:.0%} hidden)": shown(torch.where(hidden, gray, patches)),
            "reconstruction": shown(torch.where(hidden, predicted, patches))}
    figure = Figure(figsize=(1.3 * len(pixel_values), 1.3 * len(rows) + 0.3), layout="constrained")
    axes = figure.subplots(len(rows), len(pixel_values), squeeze=False)
    for axes_row, (title, images) in zip(axes, rows.items()):
        axes_row[0].set_title(title, loc="left", fontsize=9)
        for ax, image in zip(axes_row, images):
            ax.imshow(image if image.shape[-1] == 3 else image.mean(-1), cmap="gray", vmin=0, vmax=1)
            ax.set_axis_off()
    figure.savefig(path, dpi=100)


# model card


def card_section(config, name, data, losses):
    """The model card's account of the pretraining: data, task, held-out reconstruction beside the baselines."""
    target = " (each patch normalized by its own mean and variance)" if config.norm_pix_loss else ""
    return f"""## Masked autoencoder pretraining

Pretrained without labels as a masked autoencoder (He et al., 2021) with vitx's `scripts/pretrain.py` on the
{len(data.train):,} training images of {name}. Each image hid {config.masking_ratio:.0%} of its \
{config.num_patches} patches from the encoder; a decoder of {config.decoder_depth} block(s) of width \
{config.decoder_dim} reconstructed their pixels{target}.

Reconstruction of the {len(data.eval):,} held-out images (split `{data.eval_split}`, never trained on): mean \
squared error over the hidden patches, the same masks in every evaluation.

| prediction of the hidden patches | loss |
| --- | --- |
| this model | {losses['loss']:.4f} |
| the mean training patch | {losses['mean_patch_loss']:.4f} |
| the mean of the image's visible patches | {losses['visible_mean_loss']:.4f} |

![Held-out images: original, masked input, reconstruction]({RECONSTRUCTIONS_NAME})

Fine-tune it as a classifier with `AutoModelForImageClassification.from_pretrained(folder, num_labels=...)` or
`python scripts/train.py --model_name_or_path folder`: the encoder and embedding weights carry over, the decoder
is dropped.
"""


def main(argv=None):
    """Pretrain, evaluate, save (and with ``--push_to_hub`` push) a vitx masked autoencoder; returns the eval
    metrics (``eval_reconstruction_loss`` and the baselines' ``eval_mean_patch_loss``, ``eval_visible_mean_loss``)."""
    start = time.perf_counter()
    model_args, mae_args, data_args, training_args = parse_script_args(
        argv, (ModelArguments, MaskedAutoencoderArguments, ImageDataArguments, TrainingArguments),
        PRETRAINING_DEFAULTS, folder_suffix="vitx-mae")
    # The Trainer computes an evaluation loss only for inputs it counts as labels; the pixels are the target.
    training_args.label_names, training_args.prediction_loss_only = ["pixel_values"], True
    start_run(training_args)
    data = prepare_images(load_raw_datasets(data_args), data_args)
    model, processor = build_model(model_args, mae_args, data.resolution)
    held_out_images = held_out(data.eval, processor, data.image_column, model.config.num_patches)
    trainer = make_trainer(
        model, training_args, model_args.model_name_or_path, CardSectionTrainer, processing_class=processor,
        eval_dataset=held_out_images,
        train_dataset=data.train.with_transform(ImageTransform(processor, data.image_column,
                                                               augment=augmentation(data_args))))
    metrics = train_and_evaluate(trainer)
    name = dataset_label(data_args)
    if trainer.is_world_process_zero():
        train_images = data.train.with_transform(ImageTransform(processor, data.image_column))
        losses = reconstruction_losses(model, train_images, held_out_images)
        metrics.update({f"eval_{key}" if key != "loss" else "eval_reconstruction_loss": value
                        for key, value in losses.items()})
        plot_reconstructions(model, processor, held_out_images, os.path.join(training_args.output_dir,
                                                                             RECONSTRUCTIONS_NAME))
        trainer.card_section = card_section(model.config, name, data, losses)
    summary = f"vitx-mae: {name} {data.eval_split} reconstruction loss {metrics['eval_loss']:.4f}"
    if "eval_mean_patch_loss" in metrics:  # the main process's
        summary += (f" (mean patch {metrics['eval_mean_patch_loss']:.4f}, mean visible patch "
                    f"{metrics['eval_visible_mean_loss']:.4f})")
    save_and_report(trainer, metrics, dict(finetuned_from=model_args.model_name_or_path, dataset=name,
                                           tags=["masked-autoencoder", "vitx"]),
                    f"{summary} on {len(data.eval)} images", start)
    return metrics


if __name__ == "__main__":
    main()
