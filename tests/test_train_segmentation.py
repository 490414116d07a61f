"""scripts/train_segmentation.py: the metrics on a hand-computed example, the digit canvases, short runs on the
default data, an image/mask folder and a ``datasets`` dataset, SIGKILL + resume, and bad input named before
training."""

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from datasets import Dataset, Features, Image
from safetensors.torch import load_file
from transformers import AutoModelForSemanticSegmentation, pipeline

import train_segmentation
from helpers import MODEL_FILES, TINY_SEG, assert_a_killed_run_resumes_exactly, torchrun_script_folder

REPO = Path(__file__).resolve().parent.parent
SCRIPT = str(REPO / "scripts" / "train_segmentation.py")

METRICS = {"eval_mean_iou", "eval_mean_accuracy", "eval_overall_accuracy", "eval_per_category_iou",
           "eval_per_category_accuracy", "eval_loss"}


def test_mean_iou_by_hand():
    """Two classes and an ignored pixel. Class 0: labelled at 3 pixels, predicted at 3, both at 2: IoU 2/4,
    accuracy 2/3. Class 1: labelled at 2, predicted at 2, both at 1: IoU 1/3, accuracy 1/2. Class 2 appears
    nowhere: None, and no share of the means. Pixel accuracy: 3 right of 5 labelled."""
    labels = np.array([[0, 0, 0], [1, 1, 255]])
    predictions = np.array([[0, 0, 1], [0, 1, 2]])  # the prediction under the ignored pixel counts nowhere
    metrics = train_segmentation.mean_iou(predictions, labels, num_labels=3)
    assert metrics["per_category_iou"][:2] == pytest.approx([2 / 4, 1 / 3])
    assert metrics["per_category_iou"][2] is None and metrics["per_category_accuracy"][2] is None
    assert metrics["per_category_accuracy"][:2] == pytest.approx([2 / 3, 1 / 2])
    assert metrics["mean_iou"] == pytest.approx((2 / 4 + 1 / 3) / 2)
    assert metrics["mean_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert metrics["overall_accuracy"] == pytest.approx(3 / 5)
    assert set(metrics) == {"mean_iou", "mean_accuracy", "overall_accuracy", "per_category_iou",
                            "per_category_accuracy"}


def test_digit_canvases_label_each_digits_ink():
    scans, classes = np.full((2, 8, 8), 16.0), np.array([3, 7])
    images, masks = train_segmentation.digit_canvases(20, scans, classes, seed=0)
    for image, mask in zip(images, masks):
        image, mask = np.asarray(image), np.asarray(mask)
        assert image.shape == mask.shape == (64, 64)
        assert set(np.unique(mask)) <= {0, 4, 8}  # class + 1; 0 the background
        np.testing.assert_array_equal(mask > 0, image >= train_segmentation.INK)
    counts = [len(np.unique(np.asarray(m))) - 1 for m in masks]
    assert all(1 <= c <= 2 for c in counts) and sum((np.asarray(m) > 0).sum() > 0 for m in masks) == 20


def write_pairs(root, count=4, size=(32, 48), mask_size=None, ids=(0, 1, 2), skip_mask=None):
    """``root/images/*.png`` and ``root/masks/*.png``: random RGB images, masks of ``ids`` (and some 255)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(count):
        PIL.Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        if i == skip_mask:
            continue
        mask = rng.choice(np.array([*ids, 255], dtype=np.uint8), size=mask_size or size)
        PIL.Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """A tiny model trained a few steps on the embedded digit canvases: ``(output folder, metrics, stdout)``."""
    folder = tmp_path_factory.mktemp("canvases") / "model"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        metrics = train_segmentation.main([*TINY_SEG, "--output_dir", folder, "--max_steps", "6",
                                           "--max_train_samples", "48", "--max_eval_samples", "8",
                                           "--eval_strategy", "no", "--save_strategy", "no"])
    return folder, metrics, printed.getvalue()


def test_default_data_run_leaves_a_complete_folder(default_run):
    folder, metrics, stdout = default_run
    assert MODEL_FILES | {"predictions.png", "eval_results.json", "README.md"} <= {p.name for p in folder.iterdir()}
    saved = json.loads((folder / "eval_results.json").read_text())
    assert METRICS <= saved.keys() and saved["eval_mean_iou"] == pytest.approx(metrics["eval_mean_iou"])
    assert len(saved["eval_per_category_iou"]) == 11
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"]["0"] == "background" and config["id2label"]["10"] == "digit 9"
    assert config["image_size"] == 64 and config["auto_map"]["AutoModelForSemanticSegmentation"]
    assert json.loads((folder / "preprocessor_config.json").read_text())["image_processor_type"] \
        .startswith("SegformerImageProcessor")
    card = (folder / "README.md").read_text()
    assert "## Semantic segmentation" in card and "predictions.png" in card
    summary = [line for line in stdout.splitlines() if line.startswith("vitx-segmentation: digits validation")]
    assert len(summary) == 1 and "mean IoU" in summary[0] and "on 8 images" in summary[0]
    segments = pipeline("image-segmentation", model=str(folder))(PIL.Image.new("L", (50, 40)))
    assert segments and all(s["mask"].size == (50, 40) for s in segments)


def test_folder_data_with_label_names(tmp_path):
    write_pairs(tmp_path / "train", count=6)
    write_pairs(tmp_path / "val", count=2)
    metrics = train_segmentation.main([*TINY_SEG, "--train_dir", tmp_path / "train", "--validation_dir",
                                       tmp_path / "val", "--label_names", "sky,road,car", "--output_dir",
                                       tmp_path / "out", "--max_steps", "2", "--eval_strategy", "no",
                                       "--save_strategy", "no"])
    assert METRICS <= metrics.keys() and len(metrics["eval_per_category_iou"]) == 3
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["id2label"] == {"0": "sky", "1": "road", "2": "car"} and config["image_size"] == [32, 48]


def test_datasets_data_with_an_annotation_column(tmp_path):
    """A local dataset saved with ``datasets`` (columns "image" and "annotation", as scene_parse_150), without a
    held-out split: a fixed share of train is held out; ids are named by number."""
    pairs = write_pairs(tmp_path / "pairs", count=10)
    files = sorted((pairs / "images").iterdir())
    Dataset.from_dict({"annotation": [str(pairs / "masks" / f.name) for f in files], "image": [str(f) for f in files]},
                      features=Features({"annotation": Image(), "image": Image()})).to_parquet(
        tmp_path / "data" / "train-00000-of-00001.parquet")
    metrics = train_segmentation.main([*TINY_SEG, "--dataset_name", tmp_path / "data", "--output_dir",
                                       tmp_path / "out", "--max_steps", "2", "--eval_strategy", "no",
                                       "--save_strategy", "no", "--validation_split", "0.2"])
    assert len(metrics["eval_per_category_iou"]) == 3
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["id2label"] == {"0": "0", "1": "1", "2": "2"}


def test_fine_tunes_a_saved_folder_and_pushes_it(default_run, tmp_path, fake_hub):
    """``--model_name_or_path`` continues from a saved segmentation folder (its weights, as saved, are where
    training starts), and ``--push_to_hub`` uploads a folder that loads with its code."""
    start_folder = default_run[0]
    repos, uploads = fake_hub
    folder = tmp_path / "fine-tuned"
    train_segmentation.main([*TINY_SEG, "--model_name_or_path", start_folder, "--output_dir", folder,
                             "--max_steps", "2", "--max_train_samples", "16", "--max_eval_samples", "8",
                             "--learning_rate", "0", "--warmup_steps", "0", "--eval_strategy", "no",
                             "--save_strategy", "no", "--push_to_hub", "--hub_model_id", "someone/vitx-seg"])
    start, tuned = load_file(start_folder / "model.safetensors"), load_file(folder / "model.safetensors")
    assert start.keys() == tuned.keys()
    assert all(torch.equal(start[name], tuned[name]) for name in start)  # learning rate 0: nothing moved
    assert repos == ["someone/vitx-seg"] and uploads
    pushed = {path.name for path in uploads[-1][2].iterdir()}
    assert MODEL_FILES | {"predictions.png", "README.md"} <= pushed
    assert json.loads((folder / "config.json").read_text())["id2label"]["10"] == "digit 9"


def test_torchrun_two_processes_write_one_loadable_model(torchrun_launch):
    folder = torchrun_script_folder(torchrun_launch, "segment", "vitx-segmentation:")  # two processes with gloo
    model = AutoModelForSemanticSegmentation.from_pretrained(folder)
    assert model.config.id2label[10] == "digit 9"
    assert model(torch.zeros(1, 3, 64, 64)).logits.shape == (1, 11, 64, 64)


def test_sigkill_mid_training_then_resume_loses_nothing(tmp_path):
    """As tests/test_train.py: killed after a checkpoint, resumed with ``last``, the run ends with the weights of
    the same run never interrupted."""
    args = [*TINY_SEG, "--max_train_samples", "48", "--max_eval_samples", "8", "--max_steps", "12",
            "--save_strategy", "steps", "--save_steps", "3", "--eval_strategy", "no", "--logging_steps", "1"]
    assert_a_killed_run_resumes_exactly(SCRIPT, train_segmentation.main, args, tmp_path, step=3, max_steps=12)


@pytest.mark.parametrize("case, message", [
    (dict(mask_size=(32, 40)), r"mask '.*/masks/0.png' is 40x32 pixels, its image '.*/images/0.png' 48x32: a mask "
                               r"labels each pixel of its image and must have the image's size"),
    (dict(ids=(0, 1, 5)), r"mask '.*/masks/\d.png' holds ids \[5\], outside the 3 labels \(ids 0..2, or 255 for "
                          r"pixels not labelled\)"),
    (dict(skip_mask=2), r"the image '.*/images/2.png' has no mask of the same stem in masks/ \(1 images are "
                        r"affected\)"),
    (dict(size=(36, 48)), r"the training images: 36x48 pixels, which the patch size 8 does not divide; give a "
                          r"--patch_size that divides both sides, or an --image_size"),
], ids=["mask_size", "mask_id", "no_mask", "patch_does_not_divide"])
def test_bad_input_is_named_before_training(case, message, tmp_path):
    write_pairs(tmp_path / "train", **case)
    with pytest.raises(ValueError, match=message):
        train_segmentation.main([*TINY_SEG, "--train_dir", tmp_path / "train", "--label_names", "a,b,c",
                                 "--output_dir", tmp_path / "out"])
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written


def test_flags_that_cannot_apply_are_refused(tmp_path):
    for flags, message in ((["--augment", "true"], "--augment true: segmentation trains without augmentation"),
                           (["--label_smoothing_factor", "0.1"], "--label_smoothing_factor 0.1: the Trainer's label "
                                                                  "smoother"),
                           (["--model_type", "crossvit"], "--model_type 'crossvit' cannot segment")):
        with pytest.raises(ValueError, match=message):
            train_segmentation.main([*TINY_SEG, *flags, "--output_dir", tmp_path / "out", "--max_steps", "1"])


def test_intensity_rule_predicts_each_gray_levels_most_frequent_class():
    import benchmark

    gray = torch.tensor([0, 0, 0, 255, 255, 128], dtype=torch.float32).view(1, 1, 2, 3)
    pixels = (gray / 255 - 0.5) / 0.5  # as the processor normalizes
    labels = torch.tensor([[0, 0, 1], [2, 2, 255]])  # the 255 under gray 128 is not counted
    predict = benchmark.intensity_rule(pixels.expand(1, 3, 2, 3), labels.unsqueeze(0), num_labels=3)
    assert predict(pixels.expand(1, 3, 2, 3)).tolist() == [[[0, 0, 0], [2, 2, 0]]]


def test_benchmark_section_trains_each_contender_for_the_same_cpu_time(capsys):
    import benchmark

    report = benchmark.main(["--quick", "--sections", "segmentation", "--no-memory"])["segmentation"]
    assert (report["cpu_seconds"], report["train_images"], report["eval_images"]) == (1, 32, 16)
    assert set(report) - {"cpu_seconds", "threads", "train_images", "eval_images"} == {"intensity rule", "vitx", "unet"}
    for name in ("vitx", "unet"):
        assert report[name]["steps"] > 0 and report[name]["parameters"] > 0
    for row in (report[name] for name in ("intensity rule", "vitx", "unet")):
        assert 0 <= row["mean_iou"] <= 1 and 0 <= row["overall_accuracy"] <= 1
    assert report["intensity rule"]["overall_accuracy"] > 0.5  # most pixels are dark background, which it gets
    assert "segmentation (32 training, 16 held-out canvases; 1 CPU s each" in capsys.readouterr().out
