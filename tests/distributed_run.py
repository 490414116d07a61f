"""Every check that needs several processes, in one launch (each launch costs two interpreter starts):

    torchrun --standalone --nproc_per_node 2 tests/distributed_run.py OUT_DIR

on CPU with gloo. Rank 0 writes ``OUT_DIR/results.pt``; the tests compare it with one process. The cases and the
training steps are defined here once, for the tests' one-process references and for the launch alike:

- the Trainer's DistributedDataParallel, one optimizer step of 4 samples per process, for every head
  (``TRAINER_CASES``);
- FSDP2 (``torch.distributed.fsdp.fully_shard``) on the three families (``FAMILIES``): a few SGD steps, the
  full weights saved with ``save_pretrained`` and a sharded checkpoint reloaded;
- whether the Trainer's own ``fsdp`` flag shards on CPU;
- scripts/train.py, scripts/pretrain.py and scripts/train_segmentation.py under torchrun, with the arguments in
  ``OUT_DIR/train_args.json``, ``OUT_DIR/pretrain_args.json`` and ``OUT_DIR/segment_args.json``.
"""

import json
import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent.parent / "scripts")]

from configuration_vitx import CrossVitxConfig, VitxConfig  # noqa: E402
from helpers import tiny_cross_vit_kwargs, tiny_vit_kwargs  # noqa: E402
from modeling_vitx import CrossVitxForImageClassification, VitxForImageClassification  # noqa: E402

LEARNING_RATE = 0.5  # large, so a wrongly scaled step stands far outside float tolerance
SMOOTHING = 0.1
NUM_SAMPLES = 8

# name: (model class, config); no dropout anywhere, so a step depends only on the weights and the batch
HEADS = {
    "vit": (VitxForImageClassification, lambda: VitxConfig(**tiny_vit_kwargs())),
    "landmark": (VitxForImageClassification,
                 lambda: VitxConfig(**tiny_vit_kwargs(encoder="landmark", encoder_kwargs={"num_landmarks": 8}))),
    "crossvit": (CrossVitxForImageClassification,
                 lambda: CrossVitxConfig(**tiny_cross_vit_kwargs(dropout=0.0, emb_dropout=0.0))),
    "vit-multi-label": (VitxForImageClassification,
                        lambda: VitxConfig(**tiny_vit_kwargs(problem_type="multi_label_classification"))),
    "vit-regression": (VitxForImageClassification, lambda: VitxConfig(**tiny_vit_kwargs(num_classes=1))),
}
FAMILIES = ("vit", "landmark", "crossvit")  # single-label classifiers of each architecture
# The Trainer's label smoothing applies to class ids only: the other problem types train without it.
TRAINER_CASES = [(head, smoothing) for head in HEADS
                 for smoothing in ((0.0, SMOOTHING) if head in FAMILIES else (0.0,))]
FSDP_STEPS, FSDP_LEARNING_RATE = 3, 0.1


def build_model(head):
    """The head's tiny model, with the same weights in every process."""
    model_class, config = HEADS[head]
    torch.manual_seed(0)
    return model_class(config())


def make_samples(head, count=NUM_SAMPLES, seed=1, ignore_one=None):
    """``count`` samples as the Trainer's default collator takes them: dicts of ``pixel_values`` and ``labels``.

    With ``ignore_one``, one class id is -100 (ignored), so micro-batches and processes hold different numbers
    of labels: the loss must then be the sum over all of them divided by their count, not a mean of means. By
    default where the Trainer hands the model that count (transformers 5); 4.x's Trainer averages per micro-batch.
    """
    if ignore_one is None:
        ignore_one = build_model("vit").accepts_loss_kwargs
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(count, 3, 32, 32, generator=generator)
    if head == "vit-multi-label":
        labels = torch.randint(0, 2, (count, 10), generator=generator).float()
    elif head == "vit-regression":
        labels = torch.randn(count, generator=generator)
    else:
        labels = torch.randint(0, 10, (count,), generator=generator)
        if ignore_one:
            labels[count // 2 + 1] = -100
    return [{"pixel_values": image, "labels": label} for image, label in zip(pixel_values, labels)]


def collate(samples):
    """The samples as one batch."""
    return {key: torch.stack([sample[key] for sample in samples]) for key in samples[0]}


def parameters(model):
    """A copy of every parameter, by name."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def one_batch_sgd_step(model, samples, smoothing):
    """The reference: one plain SGD step on all the samples as one batch, by hand.

    Returns the batch's loss and the weights after the step. Label smoothing as the Trainer's, which is
    PyTorch's ``label_smoothing``: (1 - e) x the class's negative log-likelihood + e x their mean over classes."""
    model.train()
    batch = collate(samples)
    if smoothing:
        logits = model(pixel_values=batch["pixel_values"]).logits
        loss = F.cross_entropy(logits, batch["labels"], label_smoothing=smoothing)  # ignores -100
    else:
        loss = model(**batch).loss
    model.zero_grad()
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= LEARNING_RATE * p.grad
    return loss.item(), parameters(model)


def trainer_sgd_step(model, samples, *, batch_size, accumulation=1, smoothing=0.0, **arguments):
    """One optimizer step of the Trainer with plain SGD (no momentum, decay, clipping or schedule).

    Returns the loss the Trainer logs and the weights after the step."""
    from transformers import Trainer, TrainingArguments

    with tempfile.TemporaryDirectory() as output_dir:
        args = TrainingArguments(
            output_dir, per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation,
            max_steps=1, optim="sgd", learning_rate=LEARNING_RATE, lr_scheduler_type="constant", weight_decay=0.0,
            max_grad_norm=0.0, label_smoothing_factor=smoothing, logging_steps=1, save_strategy="no",
            report_to="none", disable_tqdm=True, use_cpu=True, **arguments)
        trainer = Trainer(model=model, args=args, train_dataset=samples)
        trainer.train()
    logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 1, trainer.state.log_history
    return logged[0], parameters(model)


def shard(model):
    """FSDP2 on the process group: each module the model names in ``_no_split_modules`` is a unit of its own
    (the Trainer's default auto-wrap policy), then the root takes the rest."""
    from torch.distributed.fsdp import fully_shard

    for module in model.modules():
        if type(module).__name__ in model._no_split_modules:
            fully_shard(module)
    fully_shard(model)
    return model


def sgd_steps(model, batches, learning_rate):
    """Plain SGD, one step per batch; returns each step's loss."""
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
    model.train()
    losses = []
    for batch in batches:
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return losses


def fsdp_batch(head):
    """The batch the FSDP runs train on, ``FSDP_STEPS`` times (so the loss falls); every class id a real one,
    since each process's loss is the mean over its equal half and FSDP averages the gradients."""
    return collate(make_samples(head, ignore_one=False))


def _fsdp_case(head, out_dir, rank, world_size):
    """Shards the head's model over the processes, trains ``FSDP_STEPS`` steps on this process's part of the
    batch, saves the full weights with ``save_pretrained`` (as the Trainer saves an FSDP model) and a sharded
    checkpoint, which a freshly sharded model loads."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict
    from torch.distributed.tensor import DTensor, Shard

    model = shard(build_model(head))
    placements = {name: getattr(p, "placements", None) for name, p in model.named_parameters()}
    part = slice(rank * NUM_SAMPLES // world_size, (rank + 1) * NUM_SAMPLES // world_size)
    batch = {key: value[part] for key, value in fsdp_batch(head).items()}
    losses = torch.stack(sgd_steps(model, [batch] * FSDP_STEPS, FSDP_LEARNING_RATE))
    dist.all_reduce(losses)  # the mean of the halves' means: the batch's mean
    held = sum(p.to_local().numel() for p in model.parameters())

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    folder = out_dir / f"fsdp-{head}"
    if rank == 0:
        model.save_pretrained(folder, state_dict=full)
    checkpoint = out_dir / f"fsdp-{head}-checkpoint"
    dcp.save(get_model_state_dict(model), checkpoint_id=checkpoint)
    restored = shard(build_model(head))
    state = get_model_state_dict(restored)
    dcp.load(state, checkpoint_id=checkpoint)
    set_model_state_dict(restored, state)
    reloaded = all(torch.equal(a.to_local(), b.to_local()) for a, b in zip(model.parameters(), restored.parameters()))

    facts = [None] * world_size
    dist.all_gather_object(facts, {"held": held, "reloaded": reloaded})
    return {
        "losses": (losses / world_size).tolist(),
        "sharded": all(p == (Shard(0),) for p in placements.values()),
        "dtensor": all(isinstance(p, DTensor) for p in model.parameters()),
        "numel": sum(p.numel() for p in model.parameters()),
        "held": [fact["held"] for fact in facts],
        "checkpoint_reloads": all(fact["reloaded"] for fact in facts),
        "folder": str(folder),
    }


def main(out_dir):
    from transformers import Trainer, TrainingArguments

    import pretrain
    import train
    import train_segmentation

    out_dir = Path(out_dir)
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    results = {"world_size": world_size, "trainer": {}, "fsdp": {}}
    for head, smoothing in TRAINER_CASES:
        results["trainer"][head, smoothing] = trainer_sgd_step(
            build_model(head), make_samples(head), batch_size=NUM_SAMPLES // world_size, smoothing=smoothing,
            ddp_backend="gloo")
    for head in FAMILIES:
        results["fsdp"][head] = _fsdp_case(head, out_dir, rank, world_size)

    # accelerate shards only on accelerators: on CPU, the Trainer's `fsdp` flag gives DistributedDataParallel
    with tempfile.TemporaryDirectory() as output_dir:
        args = TrainingArguments(output_dir, fsdp=True, fsdp_config={"version": 2}, use_cpu=True,
                                 ddp_backend="gloo", report_to="none")
        trainer = Trainer(model=build_model("vit"), args=args)
        results["trainer_fsdp_flag"] = {"is_fsdp_enabled": trainer.is_fsdp_enabled,
                                        "distributed_type": trainer.accelerator.distributed_type.value}

    train.main(json.loads((out_dir / "train_args.json").read_text()))
    pretrain.main(json.loads((out_dir / "pretrain_args.json").read_text()))
    train_segmentation.main(json.loads((out_dir / "segment_args.json").read_text()))
    if rank == 0:
        torch.save(results, out_dir / "results.pt")
    dist.destroy_process_group()
    # Everything is written: skip the interpreter's teardown of torch and transformers, seconds on a busy machine.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1])
