"""Small on-disk data sets in the real layouts, and a one-experience training smoke test.

Every fixture is written on the fly (tiny JPEGs through PIL) so tests need no download.
"""
from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import open_clip
import torch
from PIL import Image
from torch import nn

from avalanche_exmask.data.sample import MultimodalSample
from avalanche_exmask.models.factory import register_packaged_configs

__all__ = [
    "write_jpeg",
    "make_image_text_folder",
    "make_imagenet_r",
    "make_upmc_food101",
    "TinyClassifier",
    "train_one_experience",
]


def write_jpeg(path: Path, seed: int, size: tuple[int, int] = (24, 18)) -> Path:
    """A small random-colour JPEG at ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), dtype=torch.uint8, generator=generator)
    Image.fromarray(pixels.numpy()).save(path, format="JPEG", quality=80)
    return path


def make_image_text_folder(
    root: Path, counts: Mapping[str, int], *, captions_name: str = "captions.jsonl"
) -> tuple[Path, Path]:
    """``root/images/<class>/<class>_<i>.jpg`` and a captions file (JSONL, or JSON for ``.json``).

    :return: ``(image root, captions file)``.
    """
    images = root / "images"
    captions: dict[str, str] = {}
    seed = 0
    for cls, count in counts.items():
        for i in range(count):
            write_jpeg(images / cls / f"{cls}_{i}.jpg", seed)
            captions[f"{cls}/{cls}_{i}.jpg"] = f"a photo of a {cls} number {i}"
            seed += 1
    captions_path = root / captions_name
    write_captions(captions_path, captions.items())
    return images, captions_path


def write_captions(path: Path, pairs: Iterable[tuple[str, str]]) -> Path:
    """Write ``(image, text)`` pairs as JSON Lines, or as one JSON object for a ``.json`` path."""
    pairs = list(pairs)
    if path.suffix == ".json":
        path.write_text(json.dumps(dict(pairs)), encoding="utf-8")
    else:
        with open(path, "w", encoding="utf-8") as file:
            for image, text in pairs:
                file.write(json.dumps({"image": image, "text": text}) + "\n")
    return path


def make_imagenet_r(root: Path, wnids: Sequence[str], per_class: int) -> tuple[Path, Path]:
    """``root/imagenet-r/<wnid>/<i>.jpg`` plus ``root/captions.jsonl``; returns ``(root, captions)``."""
    pairs = []
    for c, wnid in enumerate(wnids):
        for i in range(per_class):
            write_jpeg(root / "imagenet-r" / wnid / f"{wnid}_{i}.jpg", 1000 * c + i)
            pairs.append((f"{wnid}/{wnid}_{i}.jpg", f"a rendition of class {c}, picture {i}"))
    return root, write_captions(root / "captions.jsonl", pairs)


def make_upmc_food101(
    root: Path, classes: Sequence[str], n_train: int, n_test: int, *, title=None
) -> Path:
    """``root/images/{train,test}/<class>/<class>_<i>.jpg`` and ``root/texts/{split}_titles.csv``.

    :param title: ``(class, i) -> title``; default a short title with a comma and quotes.
    """
    title = title or (lambda cls, i: f'{cls.replace("_", " ")} recipe #{i}, "the best" – crème')
    (root / "texts").mkdir(parents=True, exist_ok=True)
    for split, count in (("train", n_train), ("test", n_test)):
        rows = []
        for c, cls in enumerate(classes):
            for i in range(count):
                name = f"{cls}_{split}_{i}.jpg"
                write_jpeg(root / "images" / split / cls / name, 100 * c + i)
                rows.append([name, title(cls, i), cls])
        with open(root / "texts" / f"{split}_titles.csv", "w", encoding="utf-8", newline="") as file:
            csv.writer(file).writerows(rows)
    return root


class TinyClassifier(nn.Module):
    """The package's tiny CLIP (random weights) with a linear head on both embeddings.

    :param n_classes: number of output logits.
    """

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        register_packaged_configs()
        self.clip = open_clip.create_model("exmask-tiny", pretrained=None)
        self.head = nn.Linear(2 * 128, n_classes)

    def forward(self, x: MultimodalSample) -> torch.Tensor:
        image = self.clip.encode_image(x.image.float() / 255.0)
        text = self.clip.encode_text(x.input_ids)
        return self.head(torch.cat([image, text], dim=-1))


def train_one_experience(benchmark) -> float:
    """Train :class:`TinyClassifier` with ``Naive`` for one epoch on experience 0, then evaluate it.

    :return: the training loss of the last minibatch.
    """
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin

    n_classes = len(benchmark.class_names)
    model = TinyClassifier(n_classes)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No loggers specified")
        evaluator = EvaluationPlugin(loggers=[])
    strategy = Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
        criterion=nn.CrossEntropyLoss(),
        train_mb_size=8,
        train_epochs=1,
        eval_mb_size=8,
        device="cpu",
        evaluator=evaluator,
    )
    strategy.train(benchmark.train_stream[0])
    loss = float(strategy.loss)
    strategy.eval(benchmark.test_stream[:1])
    return loss
