"""Build time and memory of the real-data benchmark generators on synthetic on-disk data.

Writes, for each size N, a data set of N small JPEGs in each generator's real layout
(``image_text_folder``: ``<class>/<file>`` + captions.jsonl; ``mm_imagenet_r``:
``imagenet-r/<wnid>/*.jpg`` + captions.jsonl, 200 classes; ``upmc_food101``:
``images/{train,test}/<class>/`` + ``texts/*_titles.csv``, 101 classes), then builds each
benchmark in a fresh subprocess and reports: build time with and without reading image headers,
the peak of Python allocations during the build (``tracemalloc``), the process's peak RSS
(``resource``), and the time to load the first 256 items. Lazy loading shows as memory that
does not grow with N.

Usage::

    .venv/bin/python benchmarks/build_time.py --sizes 1000 5000 [--workdir /tmp/exmask_build]
"""
from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

from PIL import Image, ImageDraw

GENERATORS = ("image_text_folder", "mm_imagenet_r", "upmc_food101")


def _jpeg(path: Path, index: int) -> None:
    """A 160x120 JPEG with a coloured rectangle (a few kB, like a small photo)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (160, 120), ((37 * index) % 256, (91 * index) % 256, (53 * index) % 256))
    ImageDraw.Draw(image).rectangle([index % 60, index % 40, 100 + index % 60, 80], fill=(255 - index % 256, 80, 160))
    image.save(path, quality=85)


def write_dataset(kind: str, root: Path, n_images: int) -> None:
    """Write ``n_images`` pairs in the layout of generator ``kind`` under ``root`` (once)."""
    done = root / ".complete"
    if done.exists():
        return
    if kind == "upmc_food101":
        classes = [f"food_{c:03d}" for c in range(101)]
        writers, files = {}, {}
        (root / "texts").mkdir(parents=True, exist_ok=True)
        for split in ("train", "test"):
            files[split] = open(root / "texts" / f"{split}_titles.csv", "w", encoding="utf-8", newline="")
            writers[split] = csv.writer(files[split])
        for i in range(n_images):
            split = "test" if i % 4 == 3 else "train"
            cls = classes[i % len(classes)]
            _jpeg(root / "images" / split / cls / f"{cls}_{i}.jpg", i)
            writers[split].writerow([f"{cls}_{i}.jpg", f"{cls} recipe, number {i} – the \"best\" one", cls])
        for file in files.values():
            file.close()
    else:
        n_classes = 200 if kind == "mm_imagenet_r" else 50
        image_root = root / "imagenet-r" if kind == "mm_imagenet_r" else root / "images"
        root.mkdir(parents=True, exist_ok=True)
        with open(root / "captions.jsonl", "w", encoding="utf-8") as captions:
            for i in range(n_images):
                cls = f"n{i % n_classes:08d}"
                _jpeg(image_root / cls / f"{i}.jpg", i)
                captions.write(json.dumps({"image": f"{cls}/{i}.jpg", "text": f"a drawing of thing {i % n_classes}"}) + "\n")
    done.touch()


def build(kind: str, root: Path, verify_images: bool, encoder):
    """Build the benchmark of generator ``kind`` on the data at ``root``."""
    if kind == "image_text_folder":
        from avalanche_exmask.benchmarks.image_text_folder import image_text_folder

        return image_text_folder(root / "images", root / "captions.jsonl", n_experiences=10, verify_images=verify_images, encoder=encoder)
    if kind == "mm_imagenet_r":
        from avalanche_exmask.benchmarks.mm_imagenet_r import mm_imagenet_r

        return mm_imagenet_r(root, root / "captions.jsonl", n_experiences=10, verify_images=verify_images, encoder=encoder)
    from avalanche_exmask.benchmarks.upmc_food101 import upmc_food101

    return upmc_food101(root, n_experiences=10, verify_images=verify_images, encoder=encoder)


def measure_one(kind: str, root: Path, verify_images: bool) -> dict:
    """Build once in this process and return the measurements."""
    import avalanche_exmask.benchmarks.common  # noqa: F401 - import cost is not build cost
    from avalanche_exmask.data.encode import SampleEncoder

    encoder = SampleEncoder.for_model("exmask-tiny")  # the tokenizer's vocabulary is not build cost
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start()
    start = time.perf_counter()
    benchmark = build(kind, root, verify_images, encoder)
    seconds = time.perf_counter() - start
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    dataset = benchmark.train_stream[0].dataset
    start = time.perf_counter()
    n_load = min(256, len(dataset))
    for index in range(n_load):
        dataset[index]
    load_ms = (time.perf_counter() - start) / n_load * 1000
    return {
        "generator": kind,
        "images": sum(benchmark.split_sizes.values()),
        "verify_images": verify_images,
        "build_s": round(seconds, 3),
        "py_alloc_peak_MiB": round(peak / 2**20, 1),
        "py_alloc_held_MiB": round(current / 2**20, 1),
        "rss_before_MiB": round(rss_before),
        "peak_rss_MiB": round(rss_after),
        "load_ms_per_item": round(load_ms, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/exmask_build_time"))
    parser.add_argument("--one", nargs=3, metavar=("GENERATOR", "ROOT", "VERIFY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        kind, root, verify = args.one
        print(json.dumps(measure_one(kind, Path(root), verify == "1")))
        return
    rows = []
    for n_images in args.sizes:
        for kind in GENERATORS:
            root = args.workdir / f"{kind}_{n_images}"
            start = time.perf_counter()
            write_dataset(kind, root, n_images)
            print(f"# data {kind} N={n_images} ready ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
            for verify in ("1", "0"):
                result = subprocess.run(
                    [sys.executable, __file__, "--one", kind, str(root), verify],
                    check=True, capture_output=True, text=True,
                )
                rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
                print(json.dumps(rows[-1]), file=sys.stderr)
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")


if __name__ == "__main__":
    main()
