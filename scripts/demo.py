"""A short demo of the HF API: build the seed's ViT, look inside it, save it and load it back."""

import tempfile

import torch
from transformers import AutoModelForImageClassification

from configuration_vitx import VitxConfig
from modeling_vitx import VitxForImageClassification


def main():
    config = VitxConfig(image_size=256, patch_size=32, num_classes=1000, dim=1024, depth=6, heads=16, mlp_dim=2048,
                        dropout=0.1, emb_dropout=0.1)
    model = VitxForImageClassification(config).eval()
    img = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        out = model(img, output_attentions=True)
        embeddings = model.vitx(img).last_hidden_state
    print("logits", tuple(out.logits.shape))
    print("attentions", tuple(torch.stack(out.attentions, dim=1).shape))
    print("embeddings", tuple(embeddings.shape))
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        loaded = AutoModelForImageClassification.from_pretrained(folder).eval()
        with torch.no_grad():
            same = torch.equal(loaded(img).logits, model(img).logits)
    print("save/load round trip exact:", same)


if __name__ == "__main__":
    main()
