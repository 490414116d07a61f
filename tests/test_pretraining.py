"""Masked autoencoder pretraining (VitxForPreTraining): masking, loss, reconstruction, carry-over to fine-tuning.
Saving, remote code, bfloat16 and checkpointing: the family-parametrized suite (families.py, entry "mae")."""

import pytest
import torch
from transformers import AutoModelForPreTraining, Trainer, TrainingArguments

from configuration_vitx import CrossVitxConfig, VitxConfig
from families import MAE_DECODER as DECODER
from helpers import tiny_cross_vit_kwargs, tiny_vit_kwargs
from modeling_vitx import VitxForImageClassification, VitxForPreTraining, VitxModel
ENCODERS = {"vit": {}, "landmark": dict(encoder="landmark", encoder_kwargs={"num_landmarks": 8}),
            "mean-pool": dict(pool="mean")}


def tiny_mae(encoder="vit", **overrides):
    return VitxForPreTraining(VitxConfig(**tiny_vit_kwargs(**ENCODERS[encoder], **DECODER, **overrides)))


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_encoder_sees_only_the_visible_patches_and_the_loss_is_on_the_masked_ones(encoder):
    model = tiny_mae(encoder).eval()
    pixels, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 64)
    seen = []
    model.vitx.encoder.register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
    out = model(pixels, noise=noise)
    prefix = 0 if encoder == "mean-pool" else 1
    assert seen == [(2, prefix + 16, 32)]  # 64 patches, 75% masked: 16 visible (+ CLS)
    visible = noise.argsort(dim=1)[:, :16]
    expected_mask = torch.ones(2, 64, dtype=torch.long).scatter(1, visible, 0)  # the lowest noise stays visible
    assert torch.equal(out.mask, expected_mask)
    assert torch.equal(noise.argsort(dim=1).gather(1, out.ids_restore), torch.arange(64).expand(2, 64))
    assert out.logits.shape == (2, 64, 4 * 4 * 3)
    per_patch = ((out.logits - model.patchify(pixels)) ** 2).mean(dim=-1)
    torch.testing.assert_close(out.loss, per_patch[expected_mask.bool()].mean())


def test_per_patch_normalized_targets():
    model = tiny_mae(norm_pix_loss=True).eval()
    pixels, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 64)
    out = model(pixels, noise=noise)
    patches = model.patchify(pixels)
    target = (patches - patches.mean(-1, keepdim=True)) / (patches.var(-1, keepdim=True) + 1e-6).sqrt()
    torch.testing.assert_close(out.loss, ((out.logits - target) ** 2).mean(-1)[out.mask.bool()].mean())


def test_patchify_matches_the_patch_embedding_order_and_unpatchify_inverts_it():
    model = tiny_mae()
    pixels = torch.randn(2, 3, 32, 32)
    patches = model.patchify(pixels)
    # patch (row 1, column 2), pixel (0, 3) of channel 2
    assert patches[0, 1 * 8 + 2, (0 * 4 + 3) * 3 + 2] == pixels[0, 2, 4, 8 + 3]
    assert torch.equal(model.unpatchify(patches), pixels)
    rectangular = VitxForPreTraining(VitxConfig(**tiny_vit_kwargs(image_size=(32, 48), patch_size=(8, 4)), **DECODER))
    image = torch.randn(1, 3, 32, 48)
    assert torch.equal(rectangular.unpatchify(rectangular.patchify(image)), image)


def test_random_masks_differ_per_sample_and_train():
    model = tiny_mae()
    out = model(torch.randn(4, 3, 32, 32))
    assert (out.mask.sum(dim=1) == 48).all() and len({tuple(m.tolist()) for m in out.mask}) == 4
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("encoder", ["vit", "landmark"])
def test_pretrained_folder_fine_tunes_with_every_encoder_weight(encoder, tmp_path):
    model = tiny_mae(encoder)
    model.save_pretrained(tmp_path)
    assert type(AutoModelForPreTraining.from_pretrained(tmp_path)) is VitxForPreTraining
    classifier = VitxForImageClassification.from_pretrained(tmp_path, id2label={0: "a", 1: "b", 2: "c"})
    assert classifier.classifier.out_features == 3
    saved = model.state_dict()
    carried = {k: v for k, v in classifier.state_dict().items() if not k.startswith("classifier.")}
    assert carried.keys() == {k for k in saved if not k.startswith("decoder.")}  # head_norm too, for landmark
    assert all(torch.equal(v, saved[k]) for k, v in carried.items())
    base = VitxModel.from_pretrained(tmp_path)
    assert all(torch.equal(v, saved[f"vitx.{k}"]) for k, v in base.state_dict().items())


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"`masking_ratio` must be a float in \(0, 1\), got 1"):
        VitxConfig(**tiny_vit_kwargs(masking_ratio=1))
    with pytest.raises(ValueError, match="`masking_ratio` 0.99 leaves no visible patch of the 64"):
        VitxConfig(**tiny_vit_kwargs(masking_ratio=0.99))
    with pytest.raises(ValueError, match="masked autoencoder pretraining takes a VitxConfig .* got CrossVitxConfig"):
        VitxForPreTraining(CrossVitxConfig(**tiny_cross_vit_kwargs()))
    with pytest.raises(ValueError, match=r"`noise` must be \(batch, patches\) = \(2, 64\), got \(2, 63\)"):
        tiny_mae()(torch.randn(2, 3, 32, 32), noise=torch.rand(2, 63))


class _Images(torch.utils.data.Dataset):
    """Images with the masking noise of each, so every batching sees the same masks."""

    def __len__(self):
        return 8

    def __getitem__(self, index):
        generator = torch.Generator().manual_seed(index)
        return {"pixel_values": torch.randn(3, 32, 32, generator=generator), "noise": torch.rand(64, generator=generator)}


def test_gradient_accumulation_is_one_large_batch(tmp_path):
    def one_step(batch, accumulation):
        torch.manual_seed(0)
        model = tiny_mae()
        args = TrainingArguments(output_dir=str(tmp_path / f"{batch}"), max_steps=1, per_device_train_batch_size=batch,
                                 gradient_accumulation_steps=accumulation, learning_rate=0.1, optim="sgd",
                                 report_to=[], use_cpu=True, save_strategy="no", logging_steps=1)
        trainer = Trainer(model=model, args=args, train_dataset=_Images())
        trainer.train()
        return trainer.state.log_history[0]["loss"], model.state_dict()

    loss, weights = one_step(8, 1)
    accumulated_loss, accumulated_weights = one_step(4, 2)
    assert accumulated_loss == pytest.approx(loss, rel=1e-5)
    for name, value in weights.items():
        torch.testing.assert_close(accumulated_weights[name], value, atol=1e-6, rtol=1e-5, msg=name)
