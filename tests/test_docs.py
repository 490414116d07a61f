"""The documentation holds: the README's quick start runs as written, every relative link in the README,
CONTRIBUTING.md and docs/ leads to a file (and a heading, where it names one), and the README stays a short
front page in the project's own words."""

import re
import shutil
import sys

import pytest
import torch
import transformers.dynamic_module_utils
from PIL import Image

from configuration_vitx import VitxConfig
from helpers import PROJECT_ROOT, tiny_vit_kwargs
from modeling_vitx import VitxForImageClassification
from vitx_common import default_image_processor, save_folder

README = PROJECT_ROOT / "README.md"
DOCS = [README, PROJECT_ROOT / "CONTRIBUTING.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
# Words from outside the project: how and when the work was done, not what vitx is. "--seed" is the
# TrainingArguments flag, which the results' commands name.
FOREIGN_WORDS = re.compile(r"(?<!--)\bseeds?\b|\bsessions?\b|\blent\b|\brework\w*|\bissues?\s+#?\d+", re.IGNORECASE)


def section_code(text, heading, language="python"):
    """The code blocks of ``language`` under the ``## heading`` of a markdown ``text``."""
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.DOTALL)


def test_quick_start_classifies_the_image_it_names(tmp_path, monkeypatch, capsys):
    """The quick start, exec'd as written in a folder holding what the main job leaves (a tiny classifier with
    the digits' labels, at the path the snippet names) and the docs image it names: the pipeline's labels come
    from the folder, best first, and the top one is the model's own prediction with its probability."""
    (code,) = section_code(README.read_text(), "Quick start")
    folder = tmp_path / re.search(r'model="([^"]+)"', code).group(1)
    image = re.search(r'classify\("([^"]+)"\)', code).group(1)
    config = VitxConfig(**tiny_vit_kwargs(), id2label={i: str(i) for i in range(10)})
    model = VitxForImageClassification(config).eval()
    processor = default_image_processor(config.image_size)
    save_folder(folder, model, processor)
    (tmp_path / image).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_ROOT / image, tmp_path / image)
    # trust_remote_code may copy the folder's code into transformers' modules cache: a fresh one here.
    monkeypatch.setattr(transformers.dynamic_module_utils, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(code, namespace)

    predictions = namespace["predictions"]
    assert [p["label"] for p in predictions] == [p["label"] for p in sorted(predictions, key=lambda p: -p["score"])]
    assert {p["label"] for p in predictions} <= set(config.id2label.values()) and len(predictions) == 5
    with torch.no_grad():
        pixels = processor(Image.open(PROJECT_ROOT / image), return_tensors="pt")
        probabilities = model(**pixels).logits.softmax(dim=-1)[0]
    assert predictions[0]["label"] == config.id2label[int(probabilities.argmax())]
    assert predictions[0]["score"] == pytest.approx(float(probabilities.max()), abs=1e-5)
    assert capsys.readouterr().out.strip().endswith(repr(predictions[0]))


def github_anchor(heading):
    """The anchor GitHub gives a markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path):
    """Every heading anchor of a markdown file (headings inside code blocks are not headings)."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    return {github_anchor(title) for title in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: str(path.relative_to(PROJECT_ROOT)))
def test_relative_links_resolve(doc):
    """Every relative link or image of the page leads to a file, and to a heading of it where it names one."""
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.DOTALL)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.is_file():
            broken.append(f"{target}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.name}")
    assert not broken, broken


def test_readme_is_a_short_front_page_in_the_projects_words():
    """The README is at most 300 lines, and no page speaks of how or when the work was done."""
    assert len(README.read_text().splitlines()) <= 300
    foreign = [f"{doc.relative_to(PROJECT_ROOT)}:{number}: {match.group()}"
               for doc in DOCS for number, line in enumerate(doc.read_text().splitlines(), 1)
               for match in FOREIGN_WORDS.finditer(line)]
    assert not foreign, foreign
