"""scripts/train.py: a short run, the output folder, pipeline and push_to_hub users, SIGKILL + resume, torchrun, bad
input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Image
from transformers import AutoImageProcessor, AutoModelForImageClassification
from transformers.trainer_utils import get_last_checkpoint

import pretrain
import train
import vitx_common
from helpers import (MODEL_FILES, TINY, assert_a_killed_run_resumes_exactly, run_isolated, torchrun_script_folder,
                     write_digit_folder)

REPO = Path(__file__).resolve().parent.parent
SCRIPT = str(REPO / "scripts" / "train.py")
SINGLE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread per subprocess: test machines have few cores


def run_script(*args, timeout=300):
    """Run scripts/train.py in a single-threaded subprocess from the repository root; returns the CompletedProcess."""
    result = subprocess.run([sys.executable, SCRIPT, *map(str, args)], cwd=REPO, env=SINGLE_THREAD,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def first_correct_digit(folder):
    """A held-out digit the saved model labels right: ``(image, class name, probability)``."""
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    data = train.prepare_data(vitx_common.load_raw_datasets(train.DataArguments()), train.DataArguments())
    for row in range(len(data.eval)):
        example = data.eval[row]
        image = vitx_common.open_image(example["image"], f"row {row}")
        with torch.no_grad():
            probs = model(**processor(image, return_tensors="pt")).logits.softmax(-1)[0]
        if probs.argmax().item() == example["label"]:
            return image, model.config.id2label[example["label"]], probs.max().item()
    raise AssertionError("the trained model labels no held-out digit right")


def folder_accuracy(folder, rows):
    """The accuracy of the model saved in ``folder``, through its own image processor, on the first ``rows``
    held-out digits: what the run reported, if the folder holds the model it evaluated."""
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    data = train.prepare_data(vitx_common.load_raw_datasets(train.DataArguments()), train.DataArguments())
    held_out = data.eval.select(range(rows))
    images = [vitx_common.open_image(value, "held-out digit") for value in held_out["image"]]
    with torch.no_grad():  # in the Trainer's evaluation batches (train.py's per_device_eval_batch_size), so the
        # same sums give the same logits
        predicted = torch.cat([model(**processor(images[start:start + 256], return_tensors="pt")).logits.argmax(-1)
                               for start in range(0, rows, 256)])
    return (predicted == torch.tensor(held_out["label"])).float().mean().item()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for 150 steps on the embedded digits: ``(output folder, eval metrics)``."""
    folder = tmp_path_factory.mktemp("digits") / "model"
    metrics = train.main([*TINY, "--output_dir", folder, "--max_steps", "150", "--logging_steps", "10",
                          "--augment", "false"])
    return folder, metrics


def test_short_run_learns_and_leaves_a_complete_folder(trained):
    folder, metrics = trained
    history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert len(losses) == 15 and np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.5
    names = {path.name for path in folder.iterdir()}
    assert MODEL_FILES | {"README.md", "eval_results.json", "train_results.json", train.CURVES_NAME} <= names
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {str(i): str(i) for i in range(10)}
    assert config["auto_map"]["AutoModelForImageClassification"] == "modeling_vitx.VitxForImageClassification"
    results = json.loads((folder / "eval_results.json").read_text())
    assert results["eval_accuracy"] == metrics["eval_accuracy"] > 0.5  # chance is 0.1
    assert results["eval_top5_accuracy"] >= results["eval_accuracy"]
    assert folder_accuracy(folder, 360) == pytest.approx(metrics["eval_accuracy"], abs=1e-6)  # the saved model
    processor = AutoImageProcessor.from_pretrained(folder)
    assert processor.size == {"height": 20, "width": 20}
    card = (folder / "README.md").read_text()
    assert "image-classification" in card and "vitx" in card and "Accuracy" in card
    assert "This model was trained from scratch on the digits dataset." in card
    with PIL.Image.open(folder / train.CURVES_NAME) as curves:
        assert curves.format == "PNG" and curves.width > 300


@pytest.mark.parametrize("model_type, model_class", [("landmark", "VitxForImageClassification"),
                                                     ("crossvit", "CrossVitxForImageClassification")])
def test_every_family_trains_and_saves(model_type, model_class, tmp_path):
    folder = tmp_path / model_type
    # 24-pixel images: CrossViT's large patches (twice the small ones, 8) must divide them
    metrics = train.main([*TINY, "--image_size", "24", "--model_type", model_type, "--output_dir", folder,
                          "--max_steps", "4",
                          "--max_train_samples", "128", "--max_eval_samples", "32", "--num_landmarks", "8",
                          "--report_to", "none"])
    assert json.loads((folder / "trainer_state.json").read_text())["global_step"] == 4
    model = AutoModelForImageClassification.from_pretrained(folder)
    assert type(model).__name__ == model_class
    # the folder holds the model the run evaluated, with the processor it evaluated through
    assert folder_accuracy(folder, 32) == pytest.approx(metrics["eval_accuracy"], abs=1e-6)
    if model_type == "landmark":
        assert model.config.encoder == "landmark" and model.config.encoder_kwargs["num_landmarks"] == 8
    assert MODEL_FILES <= {p.name for p in folder.iterdir()}


def test_fine_tune_a_saved_model_on_new_labels(trained, tmp_path):
    source, _ = trained
    images = write_digit_folder(tmp_path / "images", classes=("3", "8"))
    folder = tmp_path / "fine-tuned"
    # A learning rate of zero leaves every loaded weight as it was, so the loading itself is checked.
    train.main([*TINY, "--model_name_or_path", source, "--train_dir", images, "--output_dir", folder,
                "--max_steps", "1", "--learning_rate", "0"])
    model = AutoModelForImageClassification.from_pretrained(folder)
    pretrained = AutoModelForImageClassification.from_pretrained(source)
    assert model.config.id2label == {0: "3", 1: "8"}
    assert model.classifier.weight.shape == (2, 64)
    for name, tensor in pretrained.vitx.state_dict().items():
        assert torch.equal(model.vitx.state_dict()[name], tensor), name
    assert AutoImageProcessor.from_pretrained(folder).size == {"height": 20, "width": 20}


def test_push_to_hub_uploads_a_folder_that_loads_as_remote_code_and_in_a_pipeline(tmp_path, fake_hub):
    repos, uploads = fake_hub
    folder = tmp_path / "model"
    train.main([*TINY, "--output_dir", folder, "--max_steps", "10", "--save_strategy", "steps", "--save_steps", "5",
                "--eval_strategy", "no", "--push_to_hub", "--hub_model_id", "someone/vitx-digits"])
    assert repos == ["someone/vitx-digits"]
    assert len(uploads) == 3  # two checkpoints during training, the final folder at the end
    for repo_id, path_in_repo, snapshot in uploads:
        names = {path.name for path in snapshot.iterdir()}
        assert repo_id == "someone/vitx-digits" and path_in_repo is None
        assert MODEL_FILES <= names and not any(name.startswith("checkpoint-") for name in names)
    final = uploads[-1][2]
    assert {"README.md", "eval_results.json", train.CURVES_NAME} <= {path.name for path in final.iterdir()}
    image, name, probability = first_correct_digit(folder)
    image.save(tmp_path / "digit.png")
    # What a user of the pushed repo runs, in a process that cannot import the project: the model and its
    # processor as remote code, and the image-classification pipeline.
    result = run_isolated(f"""
        import json, torch, PIL.Image
        from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline
        model = AutoModelForImageClassification.from_pretrained({str(final)!r}, trust_remote_code=True).eval()
        processor = AutoImageProcessor.from_pretrained({str(final)!r}, trust_remote_code=True)
        with torch.no_grad():
            logits = model(**processor(PIL.Image.open({str(tmp_path / "digit.png")!r}), return_tensors="pt")).logits
        classify = pipeline("image-classification", model={str(final)!r}, trust_remote_code=True)
        print(json.dumps({{"module": type(model).__module__, "logits": logits[0].tolist(),
                          "labels": model.config.id2label, "top": classify({str(tmp_path / "digit.png")!r})[0]}}))
    """, tmp_path)
    local = AutoModelForImageClassification.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        expected = local(**processor(PIL.Image.open(tmp_path / "digit.png"), return_tensors="pt")).logits[0]
    assert result["module"].startswith("transformers_modules.")
    assert result["labels"] == {str(i): str(i) for i in range(10)}
    torch.testing.assert_close(torch.tensor(result["logits"]), expected, atol=1e-5, rtol=1e-5)
    assert result["top"]["label"] == name
    assert result["top"]["score"] == pytest.approx(probability, abs=1e-5)


def test_sigkill_mid_training_then_resume_loses_nothing(tmp_path):
    # 320 examples in batches of 32: a checkpoint every epoch of 10 steps. Augmentation runs in the
    # main process (no loader workers), whose random state the checkpoints hold, so the resumed run
    # must match an uninterrupted one exactly.
    args = [*TINY, "--max_train_samples", "320", "--max_eval_samples", "64", "--max_steps", "40",
            "--save_strategy", "steps", "--save_steps", "10", "--eval_strategy", "no", "--logging_steps", "1",
            "--dataloader_num_workers", "0"]
    assert_a_killed_run_resumes_exactly(SCRIPT, train.main, args, tmp_path, step=10, max_steps=40)


def test_resume_last_skips_a_checkpoint_a_kill_left_incomplete(tmp_path):
    # The Trainer writes trainer_state.json last; a folder without it was cut off while saving.
    for step, complete in ((10, True), (20, True), (30, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-old").mkdir()
    assert vitx_common.resolve_checkpoint("last", str(tmp_path)) == str(tmp_path / "checkpoint-20")
    assert vitx_common.resolve_checkpoint("true", str(tmp_path)) == str(tmp_path / "checkpoint-20")
    assert vitx_common.resolve_checkpoint(str(tmp_path / "checkpoint-10"), str(tmp_path)) == str(
        tmp_path / "checkpoint-10")
    # transformers' get_last_checkpoint takes the cut-off one, from which the Trainer would restart at step 0
    assert get_last_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-30")
    with pytest.raises(ValueError, match=r"--resume_from_checkpoint last: no complete checkpoint in '.*empty'"):
        vitx_common.resolve_checkpoint("last", str(tmp_path / "empty"))


def test_torchrun_two_processes_write_one_loadable_model(torchrun_launch):
    folder = torchrun_script_folder(torchrun_launch, "train", "vitx:")  # two processes with gloo
    model = AutoModelForImageClassification.from_pretrained(folder)
    assert model.config.id2label[7] == "7"


# bad input: each a clear error naming the file or column, raised before training starts


@pytest.mark.parametrize("script", ["train", "pretrain"])
def test_fsdp_on_cpu_is_refused(script, tmp_path):
    # The Trainer would train DistributedDataParallel instead, without a word (tests/test_fsdp.py holds that).
    main = train.main if script == "train" else pretrain.main
    with pytest.raises(ValueError, match=r"^--fsdp shards only on accelerators \(GPUs\), and this run is on the CPU"):
        main(["--fsdp", "full_shard", "--use_cpu", "--output_dir", tmp_path / "out"])
    assert not (tmp_path / "out").exists()


def test_corrupt_image_is_named_before_training(tmp_path):
    images = write_digit_folder(tmp_path / "images")
    (images / "8" / "broken.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=r"broken\.png"):
        train.main([*TINY, "--train_dir", images, "--output_dir", tmp_path / "out", "--max_steps", "1"])
    assert not (tmp_path / "out").exists()


def test_missing_label_column_is_named(tmp_path):
    images = write_digit_folder(tmp_path / "images")
    with pytest.raises(ValueError, match=r"--label_column_name 'species' is not a column; the columns are "
                                         r"\['image', 'label'\]"):
        train.main([*TINY, "--train_dir", images, "--label_column_name", "species", "--output_dir", tmp_path / "out"])


def test_empty_dataset_is_refused(tmp_path):
    (tmp_path / "images" / "3").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no image files"):
        train.main([*TINY, "--train_dir", tmp_path / "images", "--output_dir", tmp_path / "out"])
    with pytest.raises(ValueError, match="split 'train' is empty"):
        train.main([*TINY, "--max_train_samples", "0", "--output_dir", tmp_path / "out"])
    assert not (tmp_path / "out").exists()


def test_label_outside_id2label_is_named(tmp_path):
    features = Features({"image": Image(), "label": ClassLabel(names=["3", "8"])})
    scans = [PIL.Image.fromarray(np.full((8, 8), value, dtype=np.uint8)) for value in (0, 255, 0, 255)]
    (tmp_path / "data").mkdir()
    Dataset.from_dict({"image": scans, "label": [0, 1, 0, 1]}, features=features).to_parquet(
        tmp_path / "data" / "train-00000-of-00001.parquet")
    # -1 is the datasets convention for "no label", as in unlabeled test splits.
    Dataset.from_dict({"image": scans, "label": [0, 1, -1, 1]}, features=features).to_parquet(
        tmp_path / "data" / "test-00000-of-00001.parquet")
    with pytest.raises(ValueError, match=r"label column 'label' of split 'test' holds id -1 at row 2, outside "
                                         r"id2label \(ids 0\.\.1"):
        train.main([*TINY, "--dataset_name", tmp_path / "data", "--output_dir", tmp_path / "out"])


def test_train_fraction_is_a_stratified_subset_and_keeps_the_held_out_split():
    raw = vitx_common.load_raw_datasets(train.DataArguments())
    full = train.prepare_data(raw, train.DataArguments())
    tenth = train.prepare_data(raw, train.DataArguments(train_fraction=0.1))
    assert len(tenth.train) == 144  # round(0.1 * 1,437)
    assert tenth.eval["image"] == full.eval["image"] and tenth.eval["label"] == full.eval["label"]
    per_class, tenth_per_class = (np.bincount(data.train["label"], minlength=10) for data in (full, tenth))
    assert np.abs(tenth_per_class - per_class * 144 / 1437).max() < 1  # every class's share, rounded
    rows = {value["bytes"]: label for value, label in zip(full.train["image"], full.train["label"])}
    assert all(rows[value["bytes"]] == label for value, label in zip(tenth.train["image"], tenth.train["label"]))
    # the same draw by count, whatever the training seed; --max_train_samples (the first N) applies before
    assert train.prepare_data(raw, train.DataArguments(train_samples=144)).train["image"] == tenth.train["image"]
    first = train.prepare_data(raw, train.DataArguments(max_train_samples=100, train_samples=10))
    assert set(value["bytes"] for value in first.train["image"]) <= set(value["bytes"] for value in
                                                                         full.train["image"][:100])


def test_bad_subset_flags_are_named():
    with pytest.raises(ValueError, match=r"--train_fraction must be in \(0, 1\], got 1.5"):
        train.parse_args(["--train_fraction", "1.5"])
    with pytest.raises(ValueError, match=r"--train_samples must be a positive number of examples, got 0"):
        train.parse_args(["--train_samples", "0"])
    with pytest.raises(ValueError, match=r"give either --train_fraction \(0.1\) or --train_samples \(5\), not both"):
        train.parse_args(["--train_fraction", "0.1", "--train_samples", "5"])
    raw = vitx_common.load_raw_datasets(train.DataArguments())
    with pytest.raises(ValueError, match=r"--train_samples 2000 asks for 2000 of the 1437 training examples"):
        train.prepare_data(raw, train.DataArguments(train_samples=2000))
    with pytest.raises(ValueError, match=r"--train_fraction 0.0001 asks for 0 of the 1437 training examples"):
        train.prepare_data(raw, train.DataArguments(train_fraction=0.0001))
