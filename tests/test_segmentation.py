"""VitxForSemanticSegmentation: full-resolution logits and the loss (255 ignored), the standard and landmark encoders,
rectangular and resized images, encoder weights carried over from a classifier and a masked autoencoder, the
``image-segmentation`` pipeline in process and as remote code, a compiled training step, and bad input.
(Save/load, hooks, PEFT, export and checkpointing run it through the shared suites: ``families.py``.)"""

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSemanticSegmentation, pipeline

from configuration_vitx import VitxConfig
from helpers import run_isolated, tiny_vit_kwargs
from modeling_vitx import VitxForImageClassification, VitxForPreTraining, VitxForSemanticSegmentation
from user_encoders import Mixer
from vitx_common import segmentation_image_processor

LABELS = {0: "background", 1: "vessel", 2: "crack"}


def tiny(**overrides):
    """A tiny segmentation model of 3 classes on 32x48 images in 4x8 patches, in eval mode."""
    config = VitxConfig(**tiny_vit_kwargs(**{"image_size": (32, 48), "patch_size": (4, 8), "id2label": LABELS,
                                             "num_classes": None, **overrides}))
    return VitxForSemanticSegmentation(config).eval()


@pytest.mark.parametrize("encoder", [{}, {"encoder": "landmark", "encoder_kwargs": {"num_landmarks": 8}},
                                     {"pool": "mean"}], ids=["vit", "landmark", "no_cls_token"])
def test_full_resolution_logits_and_a_loss_that_ignores_255(encoder):
    model = tiny(**encoder)
    pixels, labels = torch.randn(2, 3, 32, 48), torch.randint(0, 3, (2, 32, 48))
    labels[0, :10] = 255
    out = model(pixels, labels=labels)
    assert out.logits.shape == (2, 3, 32, 48)
    kept = labels != 255
    log_probs = out.logits.log_softmax(dim=1).permute(0, 2, 3, 1)[kept]  # (kept pixels, classes)
    expected = -log_probs.gather(1, labels[kept].unsqueeze(1)).mean()
    torch.testing.assert_close(out.loss, expected)
    # one labelled pixel: the loss is its own negative log-likelihood, whatever the logits elsewhere
    one = torch.full_like(labels, 255)
    one[1, 31, 47] = 2
    torch.testing.assert_close(model(pixels, labels=one).loss, -out.logits.log_softmax(dim=1)[1, 2, 31, 47])
    assert model(pixels).loss is None
    resized = model(torch.randn(1, 3, 48, 64), interpolate_pos_encoding=True)
    assert resized.logits.shape == (1, 3, 48, 64)


def test_logits_vary_within_a_patch():
    """The decoder's pixel path reaches full resolution: a one-pixel change moves that pixel's logits more than
    those of the farthest pixel of its own patch (an upsampled patch-level map would move them alike). How much
    more depends on the draw of the weights, so over five fresh models, the median ratio."""
    pixels = torch.randn(1, 3, 32, 48)
    changed = pixels.clone()
    changed[0, :, 4, 8] += 3.0  # the top-left pixel of a 4x8 patch
    ratios = []
    for _ in range(5):
        model = tiny()
        with torch.no_grad():
            delta = (model(changed).logits - model(pixels).logits).abs().sum(dim=1)[0]
        ratios.append((delta[4, 8] / delta[7, 15]).item())
    assert sorted(ratios)[2] > 2, ratios


def test_states_of_the_configured_layers_are_fused():
    """``segmentation_layers`` states reach the decoder, each through its own norm; ``[]`` reads the last alone."""
    model = tiny(depth=4, segmentation_layers=[0, 2])
    assert len(model.state_norms) == 2 and model.decode_head.project.in_features == 3 * model.config.dim
    seen = []
    model.state_norms[1].register_forward_hook(lambda module, args, out: seen.append(args[0]))
    pixels = torch.randn(1, 3, 32, 48)
    out = model(pixels, output_hidden_states=True)
    assert torch.equal(seen[0], out.hidden_states[2]) and len(out.hidden_states) == 5
    assert model(pixels).hidden_states is None  # states read for the decoder are returned only when asked for
    assert tiny(segmentation_layers=[]).decode_head.project.in_features == model.config.dim


def test_an_encoder_without_layer_states_needs_no_intermediate_layers():
    config = VitxConfig(**tiny_vit_kwargs(image_size=32, num_classes=3))
    encoder = Mixer(dim=config.dim, tokens=config.num_patches + 1)
    with pytest.raises(ValueError, match=r"`segmentation_layers` \[1\] cannot be read: the encoder .*Mixer returns "
                                         r"no layer states. Set `segmentation_layers=\[\]`"):
        VitxForSemanticSegmentation(config, encoder_module=encoder)
    config = VitxConfig(**tiny_vit_kwargs(image_size=32, num_classes=3, segmentation_layers=[]))
    assert VitxForSemanticSegmentation(config, encoder_module=encoder)(torch.randn(1, 3, 32, 32)).logits.shape == (1, 3, 32, 32)


@pytest.mark.parametrize("kwargs, message", [
    (dict(segmentation_layers=[2]), "`segmentation_layers` must be distinct `hidden_states` indices in [0, 2)"),
    (dict(segmentation_layers=[1, 1]), "got [1, 1]"),
    (dict(segmentation_dim=0), "`segmentation_dim` must be a positive int, got 0"),
    (dict(segmentation_pixel_dim=2.5), "`segmentation_pixel_dim` must be a positive int, got 2.5"),
    (dict(semantic_loss_ignore_index="255"), "`semantic_loss_ignore_index` must be an int, got '255'"),
])
def test_bad_config_values_are_named(kwargs, message):
    with pytest.raises(ValueError) as error:
        VitxConfig(**tiny_vit_kwargs(**kwargs))
    assert message in str(error.value)


def test_bad_labels_are_named():
    model, pixels = tiny(), torch.randn(2, 3, 32, 48)
    with pytest.raises(ValueError, match=r"`labels` must be \(batch, height, width\) = \(2, 32, 48\) class ids, one "
                                         r"per pixel, got \(2, 16, 24\)"):
        model(pixels, labels=torch.zeros(2, 16, 24, dtype=torch.long))
    labels = torch.zeros(2, 32, 48, dtype=torch.long)
    labels[0, 0, :2] = torch.tensor([3, -1])
    with pytest.raises(ValueError, match=r"`labels` must be class ids in \[0, 3\) or 255 \(ignored\), got \[-1, 3\]"):
        model(pixels, labels=labels)
    with pytest.raises(ValueError, match="semantic segmentation takes a VitxConfig"):
        from configuration_vitx import CrossVitxConfig
        VitxForSemanticSegmentation(CrossVitxConfig())


@pytest.mark.parametrize("source", [VitxForImageClassification, VitxForPreTraining], ids=["classifier", "mae"])
@pytest.mark.parametrize("encoder", [{}, {"encoder": "landmark", "encoder_kwargs": {"num_landmarks": 8}}],
                         ids=["vit", "landmark"])
def test_encoder_weights_carry_over_bit_identical(source, encoder, tmp_path):
    """A classifier's or a masked autoencoder's folder (what scripts/train.py and scripts/pretrain.py write) gives
    the segmentation model its encoder exactly: every ``vitx.*`` weight, and the head norm of an encoder without a
    final norm. Only the decoder starts fresh."""
    config = VitxConfig(**tiny_vit_kwargs(**encoder, decoder_dim=16, decoder_heads=2, decoder_dim_head=8))
    saved = source(config)
    saved.save_pretrained(tmp_path)
    model = AutoModelForSemanticSegmentation.from_pretrained(tmp_path, num_labels=3, id2label=LABELS,
                                                             label2id={v: k for k, v in LABELS.items()})
    assert type(model) is VitxForSemanticSegmentation and model.config.num_labels == 3
    expected = saved.state_dict()
    carried = {name for name in model.state_dict() if name.startswith("vitx.") or name.startswith("head_norm.")}
    assert carried and carried <= expected.keys()
    assert any(name.startswith("head_norm.") for name in carried) == ("encoder" in encoder)
    for name in carried:
        assert torch.equal(model.state_dict()[name], expected[name]), name
    fresh = [name for name in model.state_dict() if name not in carried]
    assert fresh and all(name.startswith(("decode_head.", "state_norms.")) for name in fresh)


def saved_segmenter(folder):
    """A tiny segmentation model with its image processor, saved into ``folder``; returns both."""
    model, processor = tiny(), segmentation_image_processor((32, 48))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor


def photo(height=40, width=52, mode="L"):
    """A random photo, grayscale by default (the pipeline converts it to RGB)."""
    rng = np.random.default_rng(0)
    shape = (height, width) if mode == "L" else (height, width, 3)
    return PIL.Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)


def expected_segments(model, processor, image):
    """``{label: mask as a uint8 array}``: the model's classes per pixel at the image's size, 255 where a class is."""
    inputs = processor(image.convert("RGB"), return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    classes = processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])[0].numpy()
    return {model.config.id2label[int(c)]: np.where(classes == c, 255, 0).astype(np.uint8) for c in np.unique(classes)}


def as_segments(results):
    return {result["label"]: np.asarray(result["mask"]) for result in results}


def assert_same_segments(actual, expected):
    assert actual.keys() == expected.keys()
    for label, mask in expected.items():
        np.testing.assert_array_equal(actual[label], mask, err_msg=label)


def test_pipeline_segments_a_photo_of_any_size(tmp_path):
    """``pipeline("image-segmentation")`` on a saved folder: one mask per predicted class, at the photo's size."""
    model, processor = saved_segmenter(tmp_path)
    image = photo()
    results = pipeline("image-segmentation", model=str(tmp_path))(image)
    assert all(result["mask"].size == image.size and result["score"] is None for result in results)
    expected = expected_segments(model, processor, image)
    assert len(expected) > 1  # a random model on a random photo still predicts more than one class
    assert_same_segments(as_segments(results), expected)


def test_pipeline_runs_as_remote_code_in_a_fresh_process(tmp_path):
    """In a process that cannot import vitx, the folder's own code serves the Auto class and the pipeline."""
    model, processor = saved_segmenter(tmp_path / "model")
    image = photo(mode="RGB")
    image.save(tmp_path / "photo.png")
    result = run_isolated(f"""
        import json, numpy as np, PIL.Image
        from transformers import AutoModelForSemanticSegmentation, pipeline
        folder = {str(tmp_path / "model")!r}
        model = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=True)
        segments = pipeline("image-segmentation", model=folder, trust_remote_code=True)(PIL.Image.open(
            {str(tmp_path / "photo.png")!r}))
        print(json.dumps({{"module": type(model).__module__, "class": type(model).__name__,
                          "segments": {{s["label"]: np.asarray(s["mask"]).tolist() for s in segments}}}}))
    """, tmp_path)
    assert result["module"].startswith("transformers_modules.") and result["class"] == "VitxForSemanticSegmentation"
    actual = {label: np.asarray(mask, dtype=np.uint8) for label, mask in result["segments"].items()}
    assert_same_segments(actual, expected_segments(model, processor, image))


def test_training_step_compiles_to_one_graph():
    """The whole training step (forward, loss, backward) in one graph, reused at the second step; loss and
    gradients are eager's (as tests/test_compile.py for the classifiers)."""
    torch._dynamo.reset()
    model = tiny(depth=1).train()
    pixels, labels = torch.randn(2, 3, 32, 48), torch.randint(0, 3, (2, 32, 48))
    labels[:, 0] = 255

    def step(forward):
        model.zero_grad()
        loss = forward(pixels, labels=labels).loss
        loss.backward()
        return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}

    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    step(compiled)
    with torch._dynamo.config.patch(error_on_recompile=True):
        loss, grads = step(compiled)
    torch._dynamo.reset()
    expected_loss, expected = step(model)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")


def test_cross_entropy_at_full_resolution_is_what_the_loss_is():
    """The loss is transformers' convention at full resolution: ``F.cross_entropy(logits, labels,
    ignore_index=semantic_loss_ignore_index)``, with another ignore index too."""
    model = tiny(semantic_loss_ignore_index=7)
    pixels, labels = torch.randn(2, 3, 32, 48), torch.randint(0, 3, (2, 32, 48))
    labels[1, 5:9] = 7
    out = model(pixels, labels=labels)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels, ignore_index=7))
