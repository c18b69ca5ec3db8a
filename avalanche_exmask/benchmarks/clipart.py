"""The embedded real-image benchmark: public-domain clip art of 10 categories, with captions.

The package ships it under ``benchmarks/resources/clipart`` in the :func:`image_text_folder`
layout::

    images/<class>/<file>.jpg     64 x 64 px JPEG: the object composited on a background and clutter
    captions.jsonl                {"image": "<class>/<file>.jpg", "text": "..."}: the clip art's title
    train.txt, test.txt           the fixed split (one relative path per line)
    object_masks.json             {"<class>/<file>.jpg": base64 of the packed bits of the bool
                                   [64, 64] object mask (the clip art's alpha >= 0.5), row-major}
    SOURCES.md, sources.jsonl     where every image comes from and its licence (public domain)

With ``background="photo"`` each image's object (the pixels of its mask; the clutter behind it
goes) is pasted, resized to the model's resolution, over a random crop of the shipped photographs
(:mod:`avalanche_exmask.benchmarks.backgrounds`), the crop drawn from the benchmark seed and the
image's path, so an image gets the same background in every run with that seed.

The images come from Debian's ``openclipart-png`` (public domain); the categories below
(:data:`HELD_OUT`) are kept out of the pretraining of the shipped ``exmask-tiny`` ``"real"``
weights, so a model evaluated here sees categories it was not pretrained on. The maintainer
script ``benchmarks/build_clipart_benchmark.py`` rebuilds the files from the installed package.
"""
from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from avalanche_exmask.benchmarks.backgrounds import BackgroundKind, photo_backgrounds
from avalanche_exmask.data.encode import SampleEncoder
from avalanche_exmask.data.sample import MultimodalSample

__all__ = [
    "HeldOutCategory", "HELD_OUT", "CLIPART_ROOT", "clipart", "clipart_object_masks", "ClipartOnPhotos",
]

#: The shipped benchmark's folder.
CLIPART_ROOT = Path(__file__).parent / "resources" / "clipart"


@dataclass(frozen=True)
class HeldOutCategory:
    """A category of the embedded benchmark, and how to keep it out of pretraining.

    :ivar name: the class folder name in the benchmark.
    :ivar folder: its openclipart-png folder (images directly inside form the class; the folder and
        its subfolders never enter pretraining).
    :ivar emoji_subcategories: ``emoji-datasource`` subcategories of the same concept, left out of
        pretraining.
    :ivar keywords: title words that leave any other pretraining item out (lower case).
    """

    name: str
    folder: str
    emoji_subcategories: tuple[str, ...]
    keywords: tuple[str, ...]


HELD_OUT: tuple[HeldOutCategory, ...] = (
    HeldOutCategory("fruit", "food/fruit", ("food-fruit",), (
        "fruit", "fruits", "apple", "apples", "banana", "pear", "cherry", "cherries", "grape", "grapes", "lemon",
        "strawberry", "watermelon", "melon", "peach", "pineapple", "kiwi", "mango", "coconut", "plum")),
    HeldOutCategory("dessert", "food/desserts", ("food-sweet",), (
        "dessert", "desserts", "cake", "candy", "cookie", "cupcake", "lollipop", "chocolate", "donut", "doughnut",
        "pudding", "sweets", "torta", "icecream")),
    HeldOutCategory("music", "recreation/music", ("music", "musical-instrument"), (
        "music", "musical", "guitar", "piano", "drum", "drums", "violin", "trumpet", "saxophone", "xylophone",
        "banjo", "flute", "harp", "accordion", "singer", "singing", "africandrum")),
    HeldOutCategory("bug", "animals/bugs", ("animal-bug",), (
        "bug", "bugs", "insect", "bee", "ant", "ants", "butterfly", "dragonfly", "ladybug", "ladybird", "beetle",
        "spider", "mosquito", "caterpillar", "snail", "worm", "cricket", "scorpion", "cockroach", "wasp", "zanzara",
        "abeille")),
    HeldOutCategory("bird", "animals/birds", ("animal-bird",), (
        "bird", "birds", "eagle", "penguin", "tux", "owl", "parrot", "duck", "chicken", "rooster", "swan", "dove",
        "pigeon", "flamingo", "peacock", "crow", "hen", "chick", "ostrich", "aquila", "acquila")),
    HeldOutCategory("beverage", "food/beverages", ("drink",), (
        "drink", "drinks", "beverage", "coffee", "coffe", "tea", "teapot", "juice", "beer", "wine", "milk",
        "cocktail", "soda", "mug", "kubek")),
    HeldOutCategory("house", "buildings/homes", ("place-building",), (
        "house", "houses", "home", "homes", "casa", "chalet", "cottage", "hut", "villa", "abitazione")),
    HeldOutCategory("flower", "plants/flowers", ("plant-flower",), (
        "flower", "flowers", "rose", "tulip", "tulips", "daisy", "daffodil", "sunflower", "lily", "blossom",
        "bouquet", "fiore", "cactus")),
    HeldOutCategory("vehicle", "transportation/vehicles", ("transport-ground", "transport-air"), (
        "car", "cars", "vehicle", "vehicles", "truck", "bus", "van", "jeep", "taxi", "tractor", "hummer",
        "chevrolet", "motorcycle", "aircraft", "airplane", "plane", "helicopter")),
    HeldOutCategory("weather", "signs_and_symbols/weather", ("sky & weather",), (
        "weather", "cloud", "cloudy", "clouds", "rain", "snow", "snowflake", "lightning", "storm", "sun", "sunny",
        "umbrella", "icicles", "thunder", "rainbow", "tornado")),
)


def clipart(
    n_experiences: int | None = 5,
    *,
    seed: int = 0,
    model_name: str = "exmask-tiny",
    classes: Sequence[str] | None = None,
    root: Path = CLIPART_ROOT,
    background: BackgroundKind = "default",
    **kwargs,
):
    """The embedded real-image benchmark through :func:`image_text_folder` (fixed train/test split).

    Images are ``uint8 [3, S, S]`` at ``model_name``'s resolution ``S`` (the shipped 64 px files
    resized, bicubic).

    :param n_experiences: experiences; the class order over them is drawn from ``seed``.
    :param classes: only these class folders (e.g. a small slice for a quick run); default all 10.
    :param root: the benchmark folder (default: the shipped one).
    :param background: ``"default"``, the shipped images as they are; ``"photo"``, each object over a
        crop of the shipped photographs (see :class:`ClipartOnPhotos`).
    :param kwargs: further arguments of :func:`image_text_folder` (``validation_fraction``,
        ``class_order``, ...; with ``background="photo"`` only those two and
        ``classes_per_experience``).
    :raises ValueError: naming unknown ``classes``, an unknown ``background`` or, with
        ``background="photo"``, an argument it does not take.
    """
    from avalanche_exmask.benchmarks.image_text_folder import image_text_folder

    if background == "photo":
        return _clipart_on_photos(n_experiences, seed=seed, model_name=model_name, classes=classes, root=root, **kwargs)
    if background != "default":
        raise ValueError(f"background must be 'default' or 'photo'; got {background!r}")
    return image_text_folder(
        root / "images",
        root / "captions.jsonl",
        n_experiences=n_experiences,
        seed=seed,
        model_name=model_name,
        train_files=root / "train.txt",
        test_files=root / "test.txt",
        classes=classes,
        **kwargs,
    )


def clipart_object_masks(paths: Sequence[str], root: Path = CLIPART_ROOT) -> np.ndarray:
    """Ground-truth object masks of benchmark images.

    :param paths: image paths relative to ``images/`` (``"<class>/<file>.jpg"``).
    :return: ``bool [n, 64, 64]``, the object's pixels (its alpha >= 0.5).
    :raises KeyError: naming a path without a mask.
    """
    stored = json.loads((root / "object_masks.json").read_text(encoding="utf-8"))
    masks = []
    for path in paths:
        if path not in stored:
            raise KeyError(f"no object mask for {path} in {root / 'object_masks.json'}")
        bits = np.frombuffer(base64.b64decode(stored[path]), dtype=np.uint8)
        masks.append(np.unpackbits(bits)[: 64 * 64].reshape(64, 64).astype(bool))
    return np.stack(masks) if masks else np.zeros((0, 64, 64), dtype=bool)


class ClipartOnPhotos(Dataset):
    """Benchmark images with their object pasted over a crop of the shipped photographs.

    Item ``i`` reads ``root/images/<sources[i]>`` and its object mask, resizes both to the encoder's
    resolution ``S`` (bicubic image, nearest-neighbour mask), draws a background with
    :func:`~avalanche_exmask.benchmarks.backgrounds.photo_backgrounds` from a generator seeded by
    ``(seed, crc32 of the path)`` and keeps the image's pixels where the mask is set. Items are
    ``(MultimodalSample, label)``: ``image`` ``uint8 [3, S, S]``, ``input_ids`` ``long [T]``.

    :param sources: image paths relative to ``root/images`` (``"<class>/<file>.jpg"``).
    :param texts: one caption per image.
    :param labels: one label per image.
    :param encoder: sets ``S`` and tokenises the captions.
    :param seed: the benchmark seed.
    :param root: the benchmark folder.
    :raises KeyError: naming an image without an object mask.
    """

    def __init__(
        self,
        sources: Sequence[str],
        texts: Sequence[str],
        labels: Sequence[int],
        *,
        encoder: SampleEncoder,
        seed: int,
        root: Path = CLIPART_ROOT,
    ) -> None:
        if not len(sources) == len(texts) == len(labels):
            raise ValueError(f"got {len(sources)} sources, {len(texts)} texts and {len(labels)} labels")
        self.sources = list(sources)
        self.texts = list(texts)
        self.targets = [int(label) for label in labels]
        self.encoder = encoder
        self.seed = int(seed)
        self.root = Path(root)
        self._masks = clipart_object_masks(self.sources, self.root)

    def __len__(self) -> int:
        return len(self.sources)

    def object_mask(self, index: int) -> np.ndarray:
        """``bool [S, S]``: the object's pixels of item ``index`` at the encoder's resolution."""
        size = self.encoder.image_size
        mask = Image.fromarray(self._masks[index]).resize((size, size), Image.Resampling.NEAREST)
        return np.asarray(mask, dtype=bool)

    def image(self, index: int) -> np.ndarray:
        """``uint8 [3, S, S]``: item ``index``'s image, its object over its photographic background."""
        size = self.encoder.image_size
        with Image.open(self.root / "images" / self.sources[index]) as opened:
            drawn = np.asarray(opened.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)).transpose(2, 0, 1)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, zlib.crc32(self.sources[index].encode())]))
        backdrop = photo_backgrounds(rng, 1, size)[0][0]
        return np.where(self.object_mask(index)[None], drawn, backdrop)

    def __getitem__(self, index: int) -> tuple[MultimodalSample, int]:
        return self.encoder(Image.fromarray(self.image(index).transpose(1, 2, 0)), self.texts[index]), self.targets[index]


def _clipart_on_photos(
    n_experiences: int | None,
    *,
    seed: int,
    model_name: str,
    classes: Sequence[str] | None,
    root: Path,
    class_order: Sequence[int] | None = None,
    classes_per_experience: int | Sequence[int] | None = None,
    validation_fraction: float = 0.0,
):
    """:func:`clipart` with ``background="photo"``: the same split and class order, other images."""
    from avalanche_exmask.benchmarks.assemble import build_benchmark
    from avalanche_exmask.benchmarks.records import folder_records, read_file_list
    from avalanche_exmask.benchmarks.splits import carve_validation, split_by_file_lists
    from avalanche_exmask.data.image_text import InputIssues

    root = Path(root)
    encoder = SampleEncoder.for_model(model_name)
    issues = InputIssues("raise")
    records = folder_records(root / "images", root / "captions.jsonl", issues=issues)
    lists = [read_file_list(root / f"{split}.txt") for split in ("train", "test")]
    if classes is not None:
        unknown = sorted(set(classes) - set(records.classes))
        if unknown:
            raise ValueError(f"classes {unknown} are not class folders with captioned images under {root / 'images'}")
        records = records.select([i for i, cls in enumerate(records.classes) if cls in set(classes)])
        lists = [[path for path in paths if path.split("/", 1)[0] in set(classes)] for paths in lists]
    splits = split_by_file_lists(records, train_files=lists[0], test_files=lists[1], issues=issues)
    if validation_fraction > 0:
        splits = carve_validation(splits, fraction=validation_fraction, seed=seed)
    return build_benchmark(
        splits,
        make_dataset=lambda _, part, labels: ClipartOnPhotos(
            part.sources, part.texts, labels, encoder=encoder, seed=seed, root=root
        ),
        encoder=encoder,
        issues=issues,
        n_experiences=n_experiences,
        classes_per_experience=classes_per_experience,
        seed=seed,
        class_order=class_order,
    )
