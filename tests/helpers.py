"""Test helpers: tiny model sizes, a fresh process that cannot see the project, activation checkpointing through
the API the installed transformers keeps, and the checks every converter's output folder must pass.

Fixtures live in ``conftest.py``; the table of model families every shared test runs on in ``families.py``;
the reference implementations' tiny models in ``references.py``.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from sklearn.datasets import load_digits

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TESTS = PROJECT_ROOT / "tests"

# Runs first in the fresh process: makes the project's modules unimportable, so a
# model can only come from the saved folder as Hub remote code.
_HIDE_PROJECT = textwrap.dedent("""
    import sys, importlib.abc
    class _HideProject(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("modeling_vitx", "configuration_vitx"):
                raise ImportError(f"{name} must not be importable in this process")
    sys.meta_path.insert(0, _HideProject())
""")


def run_isolated(code, tmp_path, timeout=240, hide_project=True):
    """Run ``code`` in a fresh Python process whose cwd, PYTHONPATH and imports cannot see the project
    (with ``hide_project=False``, a fresh process that imports it, e.g. to measure its peak memory).

    Starting one costs ~10 s here (importing torch and transformers): batch every check that needs a fresh
    process into one call. Returns what the code printed as JSON on its last line.
    """
    workdir = tmp_path / "isolated"
    workdir.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if not hide_project:
        env["PYTHONPATH"] = str(PROJECT_ROOT)
    prelude = _HIDE_PROJECT if hide_project else ""
    result = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# The parent process of ``run_isolated_each``: torch and transformers imported once, then a fork per case.
_EACH_CASE = textwrap.dedent("""
    import json, os, traceback
    import torch, transformers
    from transformers import (AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification,
                              AutoModelForPreTraining)  # transformers imports these lazily: once, here

    outcomes = []
    for index, case in enumerate(CASES):
        path = f"case-{index}.json"
        pid = os.fork()
        if pid == 0:  # the child: runs the case's code, writes what it returned or how it failed
            try:
                namespace = {"case": case}
                exec(CODE, namespace)
                outcome = {"result": namespace["result"]}
                text = json.dumps(outcome)
            except BaseException:
                text = json.dumps({"error": traceback.format_exc()})
            with open(path, "w") as file:
                file.write(text)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if os.path.exists(path):
            with open(path) as file:
                outcomes.append(json.load(file))
        else:
            outcomes.append({"error": f"the process ended with status {status} and no result"})
    print(json.dumps(outcomes))
""")


def run_isolated_each(code, cases, tmp_path, timeout=600):
    """Run ``code`` once for each of ``cases`` (JSON values), each time in a process of its own that cannot see the
    project and has loaded nothing but torch and transformers: what a user's first load of a saved folder meets.

    The processes are forked, one after the other, from one ``run_isolated`` process that imported torch and
    transformers and nothing else, so a case costs a fork instead of those imports (~10 s). ``code`` reads its case
    as ``case`` and sets ``result`` to a JSON value; returns the results, in the order of ``cases``, after
    asserting that every case ran.
    """
    outcomes = run_isolated(f"CASES = {cases!r}\nCODE = {textwrap.dedent(code)!r}\n" + _EACH_CASE, tmp_path,
                            timeout=timeout)
    errors = [f"{case}:\n{outcome['error']}" for case, outcome in zip(cases, outcomes) if "error" in outcome]
    assert not errors, "\n".join(errors)[-8000:]
    return [outcome["result"] for outcome in outcomes]


# What one fresh process does: one Auto class's from_pretrained(folder, trust_remote_code=True), and for a model,
# its base model's outputs (and the whole model's, when it is the class that was saved) into the folder.
REMOTE_LOAD = """
    import sys, torch, transformers
    kwargs = {}
    if case["module_encoder"]:
        sys.path.insert(0, case["tests"])
        import user_encoders  # a user's encoder module is the user's code, importable where they load the model
        kwargs["encoder_module"] = user_encoders.Mixer()
    loaded = getattr(transformers, case["auto"]).from_pretrained(case["folder"], trust_remote_code=True, **kwargs)
    result = {"class": type(loaded).__name__, "module": type(loaded).__module__}
    if case["auto"] == "AutoImageProcessor":
        result["size"] = {side: loaded.size[side] for side in ("height", "width")}  # a SizeDict in 5.x
    else:
        config = loaded if case["auto"] == "AutoConfig" else loaded.config
        result.update(config_module=type(config).__module__, label=config.id2label[3],
                      encoder=getattr(config, "encoder", None))
    if case["auto"] not in ("AutoConfig", "AutoImageProcessor"):
        inputs = torch.load(case["folder"] + "/inputs.pt", weights_only=True)
        model = loaded.eval()
        with torch.no_grad():
            outputs = {"base": model.base_model(inputs["pixel_values"]).to_tuple()}
            if case["saved"]:
                outputs["head"] = model(**inputs).to_tuple()
        torch.save(outputs, case["folder"] + f"/{case['auto']}.pt")
"""

# scripts/train.py's model and run small enough for a unit test: 20x20 inputs in 4x4 patches, one block.
TINY = ["--image_size", "20", "--patch_size", "4", "--dim", "64", "--depth", "1", "--heads", "2", "--dim_head", "16",
        "--mlp_dim", "128", "--per_device_train_batch_size", "32", "--learning_rate", "1e-2", "--warmup_steps", "0",
        "--disable_tqdm", "true"]

# scripts/pretrain.py's masked autoencoder small enough for a unit test: 20x20 inputs in 4x4 patches (25), one
# encoder and one decoder block, on the first 64 training digits; the held-out loss on 32.
TINY_MAE = ["--image_size", "20", "--patch_size", "4", "--dim", "32", "--depth", "1", "--heads", "2", "--dim_head", "16",
            "--mlp_dim", "64", "--decoder_dim", "16", "--decoder_depth", "1", "--decoder_heads", "2",
            "--decoder_dim_head", "8", "--per_device_train_batch_size", "16", "--learning_rate", "1e-3",
            "--warmup_steps", "0", "--max_train_samples", "64", "--max_eval_samples", "32", "--eval_strategy", "no",
            "--dataloader_num_workers", "0", "--disable_tqdm", "true"]

# scripts/train_segmentation.py's model and run small enough for a unit test: 64x64 canvases in 8x8 patches, one block, a narrow decoder.
TINY_SEG = ["--patch_size", "8", "--dim", "16", "--depth", "1", "--heads", "2", "--dim_head", "8", "--mlp_dim", "32",
            "--segmentation_dim", "8", "--segmentation_pixel_dim", "4", "--per_device_train_batch_size", "8",
            "--per_device_eval_batch_size", "8", "--warmup_steps", "0", "--dataloader_num_workers", "0",
            "--disable_tqdm", "true", "--report_to", "none"]

# What a scripts/train.py or scripts/pretrain.py output folder holds to load, as remote code too.
CODE_FILES = {"configuration_vitx.py", "modeling_vitx.py"}
MODEL_FILES = {"config.json", "model.safetensors", "preprocessor_config.json"} | CODE_FILES


def torchrun_script_folder(torchrun_launch, name, summary_prefix):
    """The folder ``OUT/name`` a script wrote in the shared torchrun launch (``conftest.torchrun_launch``), after
    checking that only one of its two processes reported (a line starting ``summary_prefix``), that it ran the
    launch's 4 steps, and that the folder is complete."""
    out, _, stdout = torchrun_launch
    folder = out / name
    summaries = [line for line in stdout.splitlines() if line.startswith(summary_prefix)]
    assert len(summaries) == 1 and "on 2 process(es)" in summaries[0]
    assert json.loads((folder / "trainer_state.json").read_text())["global_step"] == 4
    assert MODEL_FILES <= {path.name for path in folder.iterdir()}
    return folder


def assert_a_killed_run_resumes_exactly(script, main, args, tmp_path, step, max_steps, timeout=600):
    """Run ``script`` (a path) with ``args`` (``--max_steps max_steps`` among them) in a single-threaded
    subprocess, SIGKILL it once ``checkpoint-{step}`` is complete, then resume it in process with ``main`` and
    ``--resume_from_checkpoint last``: the resumed run keeps the killed run's log and ends with the weights of the
    same run never interrupted (also run in process: the same code without more interpreter starts)."""
    import vitx_common
    from safetensors.torch import load_file

    folder = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, str(script), *map(str, args), "--output_dir", str(folder)],
                               cwd=PROJECT_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not (folder / f"checkpoint-{step}" / "trainer_state.json").exists():
        assert process.poll() is None, "training ended before its first checkpoint"
        assert time.monotonic() < deadline, f"no checkpoint within {timeout} s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not (folder / "model.safetensors").exists()  # killed before the end
    checkpoint = Path(vitx_common.resolve_checkpoint("last", str(folder)))
    saved = json.loads((checkpoint / "trainer_state.json").read_text())
    assert step <= saved["global_step"] < max_steps

    main([*args, "--output_dir", folder, "--resume_from_checkpoint", "last"])
    resumed = json.loads((folder / "trainer_state.json").read_text())
    assert resumed["global_step"] == max_steps
    assert resumed["log_history"][: len(saved["log_history"])] == saved["log_history"]
    reference = tmp_path / "reference"
    main([*args, "--output_dir", reference])
    weights, expected = load_file(folder / "model.safetensors"), load_file(reference / "model.safetensors")
    assert weights.keys() == expected.keys()
    for name in expected:
        assert torch.equal(weights[name], expected[name]), name


def write_digit_folder(root, classes=("3", "8"), per_class=5):
    """An image folder of real digit scans as PNGs, one subfolder per class."""
    digits = load_digits()
    for name in classes:
        (root / name).mkdir(parents=True)
        scans = digits.images[digits.target == int(name)][:per_class]
        for i, scan in enumerate(scans):
            PIL.Image.fromarray(np.round(scan * 255 / 16).astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def tiny_vit_kwargs(**overrides):
    """A ViT small enough for a unit test: 32x32 images in 4x4 patches (64 tokens)."""
    kwargs = dict(image_size=32, patch_size=4, num_classes=10, dim=32, depth=2, heads=4, mlp_dim=64, dim_head=8)
    kwargs.update(overrides)
    return kwargs


def tiny_cross_vit_kwargs(**overrides):
    """A CrossViT small enough for a unit test: 32x32 images, 4x4 patches (64 tokens) and 8x8 patches (16 tokens).

    The streams' widths differ, so cross-attention needs its in/out projections.
    """
    kwargs = dict(image_size=32, num_classes=10, depth=2, sm_dim=16, sm_patch_size=4, sm_enc_depth=1, sm_enc_heads=2,
                  sm_enc_mlp_dim=32, sm_enc_dim_head=8, lg_dim=24, lg_patch_size=8, lg_enc_depth=2, lg_enc_heads=3,
                  lg_enc_mlp_dim=32, lg_enc_dim_head=8, cross_attn_depth=2, cross_attn_heads=2, cross_attn_dim_head=8)
    kwargs.update(overrides)
    return kwargs


def enable_activation_checkpointing(model, checkpoint_kwargs=None, **options):
    """Turn on activation checkpointing through the API the installed transformers does not deprecate:
    5.x's ``activation_checkpointing_enable`` (``options``: e.g. ``every_n_layers``), else 4.x's
    ``gradient_checkpointing_enable``."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpoint_kwargs, **options)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpoint_kwargs, **options)


def convert_with_script(tmp_path, model_name, reference, kwargs, *flags):
    """Run the converter's command line (with any extra ``flags``) on ``reference``'s saved state dict and kwargs;
    returns the output folder."""
    import convert_vit_pytorch

    (tmp_path / "kwargs.json").write_text(json.dumps(kwargs))
    torch.save(reference.state_dict(), tmp_path / "checkpoint.pt")
    convert_vit_pytorch.main(["--model", model_name, "--kwargs", str(tmp_path / "kwargs.json"),
                              "--checkpoint", str(tmp_path / "checkpoint.pt"), "--output", str(tmp_path / "out"),
                              *flags])
    assert {"model.safetensors", "modeling_vitx.py", "preprocessor_config.json"} <= set(os.listdir(tmp_path / "out"))
    return tmp_path / "out"


def assert_runs_in_pipeline(folder, reference):
    """``pipeline("image-classification", model=folder)``, in this process, labels a 40x48 RGB photo as
    ``reference`` (the converted model's source: a callable returning logits) does on the pixel values of the
    folder's own image processor: the same top label, with its softmax probability as the score."""
    import modeling_vitx  # noqa: F401  (registers vitx with the Auto classes the pipeline reads)
    from PIL import Image
    from transformers import AutoImageProcessor, pipeline

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8))
    classify = pipeline("image-classification", model=str(folder))
    top = classify(image, top_k=1)[0]
    pixel_values = AutoImageProcessor.from_pretrained(folder)(image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        probabilities = reference(pixel_values).softmax(dim=-1)[0]
    assert top["label"] == classify.model.config.id2label[int(probabilities.argmax())]
    assert top["score"] == pytest.approx(float(probabilities.max()), abs=1e-5)
