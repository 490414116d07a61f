"""Fixtures: a fixed seed for every test, and the one torchrun launch that the multi-process tests share.

Helpers live in ``helpers.py``, the model families the shared tests run on in ``families.py``.
"""

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import Future

import pytest
import torch
from huggingface_hub import HfApi, RepoUrl

from helpers import PROJECT_ROOT, TINY, TINY_MAE, TINY_SEG

# One thread per test process, unless OMP_NUM_THREADS says otherwise; the fresh processes tests start inherit it.
# Tiny models gain nothing from a second thread, and where another process holds the other core, OpenMP's
# barriers make every op wait for it: a tiny CrossViT's forward takes 10 ms on one thread, 500 ms on two here.
torch.set_num_threads(int(os.environ.setdefault("OMP_NUM_THREADS", "1")))


def pytest_configure(config):
    config.addinivalue_line("markers", "xdist_group(name): run on one pytest-xdist worker with the group's other tests")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the marks
def pytest_collection_modifyitems(items):
    """.ci/run spreads the tests over two pytest-xdist workers (``--dist loadgroup``). Tests that share an
    expensive fixture go to one worker, so that it is built once: the torchrun launch, test_train.py's model."""
    for item in items:
        for fixture in ("torchrun_launch", "trained"):
            if fixture in item.fixturenames:
                item.add_marker(pytest.mark.xdist_group(fixture))


@pytest.fixture(scope="session")
def torchrun_launch(tmp_path_factory):
    """tests/distributed_run.py under ``torchrun --nproc_per_node 2`` (gloo on CPU, one thread per process), once
    for every test that needs several processes; it runs scripts/train.py, scripts/pretrain.py and
    scripts/train_segmentation.py too, into ``OUT/train``, ``OUT/pretrain`` and ``OUT/segment``.

    Returns ``(OUT, rank 0's results, stdout)``."""
    out = tmp_path_factory.mktemp("torchrun")
    (out / "train_args.json").write_text(json.dumps([
        *TINY, "--output_dir", str(out / "train"), "--max_steps", "4", "--max_eval_samples", "64",
        "--eval_strategy", "no", "--save_strategy", "no", "--use_cpu", "--ddp_backend", "gloo"]))
    (out / "pretrain_args.json").write_text(json.dumps([
        *TINY_MAE, "--output_dir", str(out / "pretrain"), "--max_steps", "4", "--save_strategy", "no", "--use_cpu",
        "--ddp_backend", "gloo"]))
    (out / "segment_args.json").write_text(json.dumps([
        *TINY_SEG, "--output_dir", str(out / "segment"), "--max_steps", "4", "--max_train_samples", "64",
        "--max_eval_samples", "8", "--eval_strategy", "no", "--save_strategy", "no", "--use_cpu", "--ddp_backend",
        "gloo"]))
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(PROJECT_ROOT / "tests" / "distributed_run.py"), str(out)],
        cwd=PROJECT_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return out, torch.load(out / "results.pt", weights_only=True), result.stdout


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """The Hub, offline: ``(repos created, uploads)``, each upload ``(repo_id, path_in_repo, snapshot folder)``."""
    repos, uploads = [], []

    def create_repo(self, repo_id, **kwargs):
        repos.append(repo_id)
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, ignore_patterns=None, run_as_future=False, **kwargs):
        # What the Hub would receive: the folder as it is at the call, less the ignored names.
        snapshot = tmp_path / f"upload-{len(uploads)}"
        shutil.copytree(folder_path, snapshot, ignore=shutil.ignore_patterns(*(ignore_patterns or [])))
        uploads.append((repo_id, kwargs.get("path_in_repo"), snapshot))
        if not run_as_future:
            return None
        done = Future()
        done.set_result(None)
        return done

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return repos, uploads
