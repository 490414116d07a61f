"""transformers' dense heads on a vitx backbone, built from ``backbone_config=VitxConfig(...)``: UperNet (semantic
segmentation), DPT (depth), Mask2Former (universal segmentation, on the feature pyramid) and DETR (detection).
Each computes its loss, trains end to end (the loss goes down, the ViT's weights move), saves, and loads in a
fresh process that imports ``modeling_vitx`` first (the head's folder carries no backbone code), computing what
it computed before saving."""

import pytest
import torch
from transformers import (DetrConfig, DetrForObjectDetection, DPTConfig, DPTForDepthEstimation, Mask2FormerConfig,
                          Mask2FormerForUniversalSegmentation, UperNetConfig, UperNetForSemanticSegmentation)

from configuration_vitx import VitxConfig
from helpers import run_isolated, tiny_vit_kwargs
from modeling_vitx import VitxBackbone


def upernet():
    """UperNet on every stage's map; its auxiliary head reads the third map, ``dim`` wide."""
    config = UperNetConfig(backbone_config=VitxConfig(**tiny_vit_kwargs(out_features=["stem", "stage1", "stage2"])),
                           hidden_size=16, pool_scales=[1, 2], num_labels=3, auxiliary_in_channels=32,
                           auxiliary_channels=16)
    model = UperNetForSemanticSegmentation(config)
    pixels = torch.randn(2, 3, 32, 32)
    labels = (pixels[:, 0] > 0).long() + (pixels[:, 1] > 1).long()  # a class per pixel, from the image
    return model, {"pixel_values": pixels, "labels": labels}, lambda out: out.loss


def dpt():
    """DPT reads CLS-first tokens (``reshape_hidden_states=False``) of two stages and reassembles them at 2x and
    1x. transformers' depth models compute no loss (``labels`` raise NotImplementedError): an L1 loss on the
    predicted depth here."""
    backbone_config = VitxConfig(**tiny_vit_kwargs(out_features=["stage1", "stage2"], reshape_hidden_states=False))
    config = DPTConfig(backbone_config=backbone_config, hidden_size=32, neck_hidden_sizes=[16, 32],
                       reassemble_factors=[2, 1], fusion_hidden_size=16, neck_ignore_stages=[])
    model = DPTForDepthEstimation(config)
    pixels = torch.randn(2, 3, 32, 32)
    depth = torch.nn.functional.interpolate(pixels[:, :1].abs(), size=(64, 64))[:, 0]  # DPT's head upsamples 2x
    return model, {"pixel_values": pixels}, lambda out: (out.predicted_depth - depth).abs().mean()


def mask2former():
    """Mask2Former on the simple feature pyramid of the last stage: four levels, 32 channels each (its pixel
    decoder's GroupNorm takes 32 groups)."""
    backbone_config = VitxConfig(**tiny_vit_kwargs(image_size=64, patch_size=8, feature_pyramid=True,
                                                   feature_pyramid_channels=32))
    config = Mask2FormerConfig(backbone_config=backbone_config, feature_size=32, mask_feature_size=32, hidden_dim=32,
                               encoder_feedforward_dim=32, dim_feedforward=32, encoder_layers=1, decoder_layers=2,
                               num_attention_heads=2, num_queries=4, num_labels=3, train_num_points=256)
    model = Mask2FormerForUniversalSegmentation(config)
    masks = torch.zeros(2, 2, 64, 64)
    masks[:, 0, :32], masks[:, 1, 32:] = 1, 1  # top and bottom halves
    return model, {"pixel_values": torch.randn(2, 3, 64, 64), "mask_labels": list(masks),
                   "class_labels": [torch.tensor([0, 1]), torch.tensor([1, 2])]}, lambda out: out.loss


def detr():
    """DETR on the last stage's map, through transformers' own backbone loading (``use_timm_backbone=False``)."""
    config = DetrConfig(use_timm_backbone=False, use_pretrained_backbone=False, backbone=None,
                        backbone_config=VitxConfig(**tiny_vit_kwargs()), d_model=16, encoder_layers=1,
                        decoder_layers=1, encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2,
                        decoder_attention_heads=2, num_queries=4, num_labels=3)
    model = DetrForObjectDetection(config)
    labels = [{"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.3, 0.4, 0.2, 0.4]])},
              {"class_labels": torch.tensor([2, 0]), "boxes": torch.tensor([[0.6, 0.5, 0.4, 0.2], [0.2, 0.2, 0.2, 0.2]])}]
    return model, {"pixel_values": torch.randn(2, 3, 32, 32), "labels": labels}, lambda out: out.loss


HEADS = {"upernet": upernet, "dpt": dpt, "mask2former": mask2former, "detr": detr}


def outputs(model, pixels):
    """The eval-mode output tensors a head computes for ``pixels``: what its reloaded copy must reproduce."""
    model.eval()
    with torch.no_grad():
        out = model(pixel_values=pixels)
    return {name: value for name, value in out.items() if torch.is_tensor(value)}


@pytest.fixture(scope="module")
def trained_heads(tmp_path_factory):
    """Every head trained for a few steps on its batch, then saved: name -> (losses, ViT weights before, model,
    folder)."""
    torch.manual_seed(0)
    root, results = tmp_path_factory.mktemp("dense_heads"), {}
    for name, build in HEADS.items():
        model, batch, loss_of = build()
        backbone = next(module for module in model.modules() if isinstance(module, VitxBackbone))
        before = {key: value.clone() for key, value in backbone.vitx.state_dict().items()}
        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
        model.train()
        losses = []
        for _ in range(8):
            loss = loss_of(model(**batch))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        model.save_pretrained(root / name)
        torch.save(batch["pixel_values"], root / name / "pixels.pt")
        results[name] = (losses, before, model, backbone, root / name)
    return results


@pytest.mark.parametrize("name", list(HEADS))
def test_head_trains_end_to_end_on_a_vitx_backbone(trained_heads, name):
    losses, before, model, backbone, _ = trained_heads[name]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[-3:]) < 0.97 * losses[0], losses
    moved = [key for key, value in backbone.vitx.state_dict().items() if not torch.equal(value, before[key])]
    assert any(key.startswith("encoder.layers.0.") for key in moved) and "embeddings.position_embeddings" in moved


def test_heads_reload_in_a_fresh_process_after_importing_vitx(trained_heads, tmp_path):
    """What a user does: ``import modeling_vitx`` (registers the "vitx" config and backbone), then the head's own
    ``from_pretrained``; every head computes exactly what it computed before saving."""
    expected = {name: outputs(model, torch.load(folder / "pixels.pt")) for name, (*_, model, _, folder) in
                trained_heads.items()}
    folders = {name: str(folder) for name, (*_, folder) in trained_heads.items()}
    classes = {"upernet": "UperNetForSemanticSegmentation", "dpt": "DPTForDepthEstimation",
               "mask2former": "Mask2FormerForUniversalSegmentation", "detr": "DetrForObjectDetection"}
    result = run_isolated(f"""
        import json, torch, transformers
        import modeling_vitx  # registers VitxConfig with AutoConfig and VitxBackbone with AutoBackbone
        backbones = {{}}
        for name, folder in {folders!r}.items():
            model = getattr(transformers, {classes!r}[name]).from_pretrained(folder).eval()
            with torch.no_grad():
                out = model(pixel_values=torch.load(folder + "/pixels.pt"))
            torch.save({{k: v for k, v in out.items() if torch.is_tensor(v)}}, folder + "/reloaded.pt")
            backbones[name] = [type(m).__name__ for m in model.modules() if type(m).__name__ == "VitxBackbone"]
        print(json.dumps(backbones))
    """, tmp_path, timeout=600, hide_project=False)
    assert result == {name: ["VitxBackbone"] for name in HEADS}
    for name, folder in folders.items():
        reloaded = torch.load(f"{folder}/reloaded.pt")
        assert reloaded.keys() == expected[name].keys() and reloaded, name
        for key, value in expected[name].items():
            assert torch.equal(reloaded[key], value), (name, key)
