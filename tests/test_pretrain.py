"""scripts/pretrain.py: a short run leaves a complete folder that fine-tunes, resume, torchrun, the held-out split, bad
input."""

import json
import shutil

import PIL.Image
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification, AutoModelForPreTraining

import pretrain
import train
import vitx_common
from helpers import CODE_FILES, MODEL_FILES, TINY_MAE, tiny_cross_vit_kwargs, torchrun_script_folder, write_digit_folder
from configuration_vitx import CrossVitxConfig
from modeling_vitx import CrossVitxForImageClassification, VitxForPreTraining



def test_short_run_pushes_a_complete_folder_that_fine_tunes(tmp_path, fake_hub):
    repos, uploads = fake_hub
    folder = tmp_path / "mae"
    metrics = pretrain.main([*TINY_MAE, "--output_dir", folder, "--max_steps", "4", "--save_strategy", "no",
                             "--push_to_hub", "--hub_model_id", "someone/vitx-mae"])
    # the held-out loss the script computes is the Trainer's (both with the fixed masks), beside its baselines
    assert metrics["eval_reconstruction_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-5)
    assert repos == ["someone/vitx-mae"]
    final = uploads[-1][2]
    names = {path.name for path in final.iterdir()}
    assert MODEL_FILES | CODE_FILES | {"README.md", "eval_results.json", pretrain.RECONSTRUCTIONS_NAME} <= names
    card = (final / "README.md").read_text()
    assert "## Masked autoencoder pretraining" in card and "64 training images of digits" in card
    for row, key in (("this model", "eval_reconstruction_loss"), ("the mean training patch", "eval_mean_patch_loss"),
                     ("the mean of the image's visible patches", "eval_visible_mean_loss")):
        assert f"| {row} | {metrics[key]:.4f} |" in card
    assert f"![Held-out images: original, masked input, reconstruction]({pretrain.RECONSTRUCTIONS_NAME})" in card
    with PIL.Image.open(final / pretrain.RECONSTRUCTIONS_NAME) as picture:
        assert picture.format == "PNG" and picture.width > picture.height > 200  # 8 images by 3 rows
    config = json.loads((final / "config.json").read_text())
    assert config["auto_map"]["AutoModelForPreTraining"] == "modeling_vitx.VitxForPreTraining"
    assert (config["masking_ratio"], config["decoder_dim"], config["decoder_depth"]) == (0.75, 16, 1)

    saved = load_file(folder / "model.safetensors")
    model = AutoModelForPreTraining.from_pretrained(folder)
    assert type(model) is VitxForPreTraining
    assert all(torch.equal(tensor, saved[name]) for name, tensor in model.state_dict().items())
    # train.py fine-tunes it on a stratified tenth of the labels; at learning rate 0 every encoder weight stays
    tuned = tmp_path / "tuned"
    train.main(["--model_name_or_path", folder, "--output_dir", tuned, "--max_steps", "1", "--learning_rate", "0",
                "--train_fraction", "0.1", "--max_eval_samples", "32", "--eval_strategy", "no", "--save_strategy",
                "no", "--dataloader_num_workers", "0", "--disable_tqdm", "true"])
    classifier = AutoModelForImageClassification.from_pretrained(tuned)
    assert classifier.config.id2label == {i: str(i) for i in range(10)}
    carried = {name: tensor for name, tensor in classifier.state_dict().items() if not name.startswith("classifier.")}
    assert carried.keys() == {name for name in saved if not name.startswith("decoder.")}
    assert all(torch.equal(tensor, saved[name]) for name, tensor in carried.items())
    # flags change a saved model's masked autoencoder settings, checked as a fresh config's are
    with pytest.raises(ValueError, match=r"`masking_ratio` must be a float in \(0, 1\), got 1.5"):
        pretrain.main([*TINY_MAE, "--model_name_or_path", folder, "--masking_ratio", "1.5", "--output_dir", tuned])


def test_resumed_run_ends_as_the_uninterrupted_one(tmp_path):
    """A run resumed from its checkpoint after the first epoch (as after a kill) ends with the weights and log of
    one that ran through: the masks, the data order and the augmentation all come from the checkpointed random
    states. (Mid-epoch the loader has drawn the next batch's augmentation before the checkpoint is written.)"""
    args = [*TINY_MAE, "--max_steps", "8", "--save_strategy", "steps", "--save_steps", "4", "--logging_steps", "1"]
    through = tmp_path / "through"
    pretrain.main([*args, "--output_dir", through])  # 64 images in batches of 16: 4 steps an epoch
    killed = tmp_path / "killed"
    shutil.copytree(through / "checkpoint-4", killed / "checkpoint-4")
    pretrain.main([*args, "--output_dir", killed, "--resume_from_checkpoint", "last"])
    expected, weights = load_file(through / "model.safetensors"), load_file(killed / "model.safetensors")
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[name], expected[name]) for name in expected)
    history = [json.loads((folder / "trainer_state.json").read_text())["log_history"] for folder in (through, killed)]
    assert [entry.get("loss") for entry in history[1]] == [entry.get("loss") for entry in history[0]]


def test_torchrun_two_processes_write_one_folder(torchrun_launch):
    folder = torchrun_script_folder(torchrun_launch, "pretrain", "vitx-mae:")  # two processes with gloo
    assert {"README.md", pretrain.RECONSTRUCTIONS_NAME} <= {path.name for path in folder.iterdir()}
    assert type(AutoModelForPreTraining.from_pretrained(folder)) is VitxForPreTraining


def test_the_digits_held_out_split_is_train_pys():
    """Pretraining on the digits never sees the images train.py holds out."""
    raw = vitx_common.load_raw_datasets(train.DataArguments())
    images = pretrain.prepare_images(raw, vitx_common.ImageDataArguments())
    labelled = train.prepare_data(raw, train.DataArguments())
    for pretraining, training in ((images.train, labelled.train), (images.eval, labelled.eval)):
        assert pretraining["image"] == training["image"]
    assert (len(images.train), len(images.eval)) == (1437, 360)


def test_flat_image_folder_without_labels(tmp_path):
    images = write_digit_folder(tmp_path / "images", classes=("3",), per_class=5)
    for path in (images / "3").iterdir():
        path.rename(images / path.name)
    raw = vitx_common.load_raw_datasets(vitx_common.ImageDataArguments(train_dir=str(images)))
    data = pretrain.prepare_images(raw, vitx_common.ImageDataArguments(validation_split=0.4))
    assert (len(data.train), len(data.eval), data.eval_split, data.image_column) == (3, 2, "test", "image")


def test_bad_input_is_named_before_training(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"--train_dir '.*empty' holds no image files"):
        pretrain.main([*TINY_MAE, "--train_dir", tmp_path / "empty", "--output_dir", out])
    with pytest.raises(ValueError, match=r"--model_type 'crossvit' cannot be pretrained: .* \(--model_type vit or "
                                         r"landmark\); CrossViT's two streams have no pretraining head"):
        pretrain.main([*TINY_MAE, "--model_type", "crossvit", "--output_dir", out])
    CrossVitxForImageClassification(CrossVitxConfig(**tiny_cross_vit_kwargs())).save_pretrained(tmp_path / "cross")
    with pytest.raises(ValueError, match=r"--model_name_or_path '.*cross' holds a CrossVitxConfig model, which has no "
                                         r"masked autoencoder pretraining"):
        pretrain.main([*TINY_MAE, "--model_name_or_path", tmp_path / "cross", "--output_dir", out])
    with pytest.raises(ValueError, match=r"`masking_ratio` must be a float in \(0, 1\), got 1.5"):
        pretrain.main([*TINY_MAE, "--masking_ratio", "1.5", "--output_dir", out])
    assert not out.exists()
