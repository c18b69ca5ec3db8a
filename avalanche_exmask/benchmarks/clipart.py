"""The embedded real-image benchmark: public-domain clip art of 10 categories, with captions.

The package ships it under ``benchmarks/resources/clipart`` in the :func:`image_text_folder`
layout::

    images/<class>/<file>.jpg     64 x 64 px JPEG: the object composited on a background and clutter
    captions.jsonl                {"image": "<class>/<file>.jpg", "text": "..."}: the clip art's title
    train.txt, test.txt           the fixed split (one relative path per line)
    object_masks.json             {"<class>/<file>.jpg": base64 of the packed bits of the bool
                                   [64, 64] object mask (the clip art's alpha >= 0.5), row-major}
    SOURCES.md, sources.jsonl     where every image comes from and its licence (public domain)

The images come from Debian's ``openclipart-png`` (public domain); the categories below
(:data:`HELD_OUT`) are kept out of the pretraining of the shipped ``exmask-tiny`` ``"real"``
weights, so a model evaluated here sees categories it was not pretrained on. The maintainer
script ``benchmarks/build_clipart_benchmark.py`` rebuilds the files from the installed package.
"""
from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["HeldOutCategory", "HELD_OUT", "CLIPART_ROOT", "clipart", "clipart_object_masks"]

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
    **kwargs,
):
    """The embedded real-image benchmark through :func:`image_text_folder` (fixed train/test split).

    :param n_experiences: experiences; the class order over them is drawn from ``seed``.
    :param classes: only these class folders (e.g. a small slice for a quick run); default all 10.
    :param root: the benchmark folder (default: the shipped one).
    :param kwargs: further arguments of :func:`image_text_folder` (``validation_fraction``, ...).
    :raises ValueError: naming unknown ``classes``.
    """
    from avalanche_exmask.benchmarks.image_text_folder import image_text_folder

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
