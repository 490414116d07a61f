"""FSDP2: vitx models shard over 2 processes (torch's ``fully_shard``, gloo on CPU, in the shared torchrun
launch) and train exactly as in one process; the saved weights and a sharded checkpoint reload.

Each module the model names in ``_no_split_modules`` is a shard unit of its own, as with the Trainer's default
auto-wrap policy. On CPU the Trainer itself does not shard (accelerate enables FSDP only on accelerators), so
the launch calls ``fully_shard`` directly, and a test below holds the Trainer's CPU behaviour to what the
README says.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distributed_run import (FAMILIES, FSDP_LEARNING_RATE, FSDP_STEPS, HEADS, build_model, fsdp_batch, parameters,
                             sgd_steps)


@pytest.mark.parametrize("head", FAMILIES)
def test_two_sharded_processes_train_as_one(head, torchrun_launch):
    _, results, _ = torchrun_launch
    fsdp = results["fsdp"][head]
    # really sharded: every parameter a DTensor split along its first dim, each process holding about half
    assert fsdp["sharded"] and fsdp["dtensor"]
    assert sum(fsdp["held"]) == fsdp["numel"] and max(fsdp["held"]) < 0.6 * fsdp["numel"]

    model = build_model(head)
    losses = [loss.item() for loss in sgd_steps(model, [fsdp_batch(head)] * FSDP_STEPS, FSDP_LEARNING_RATE)]
    assert losses[-1] < losses[0] - 0.5  # it trains
    assert fsdp["losses"] == pytest.approx(losses, rel=1e-5)

    saved = load_file(f"{fsdp['folder']}/model.safetensors")
    expected = parameters(model)
    assert saved.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(saved[name], tensor, rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")
    model_class, _ = HEADS[head]
    reloaded = model_class.from_pretrained(fsdp["folder"])
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    assert fsdp["checkpoint_reloads"]  # every process's shards, through torch.distributed.checkpoint


def test_sharded_model_saves_a_remote_code_folder(torchrun_launch):
    _, results, _ = torchrun_launch
    for head in FAMILIES:
        folder = results["fsdp"][head]["folder"]
        config = json.loads((Path(folder) / "config.json").read_text())
        assert {"configuration_vitx.py", "modeling_vitx.py"} <= {p.name for p in Path(folder).iterdir()}
        assert not [p.name for p in Path(folder).glob("_fsdp*")]
        assert all(name.split(".")[0] in ("configuration_vitx", "modeling_vitx")
                   for name in config["auto_map"].values()), config["auto_map"]


def test_the_trainers_fsdp_flag_does_not_shard_on_cpu(torchrun_launch):
    # What the README says: on CPU, `--fsdp` (with fsdp_config version 2) trains DistributedDataParallel.
    _, results, _ = torchrun_launch
    assert results["trainer_fsdp_flag"] == {"is_fsdp_enabled": False, "distributed_type": "MULTI_CPU"}
