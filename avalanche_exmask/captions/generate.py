"""Caption a folder of images with any Hugging Face image-to-text model, resumably.

The output is JSON Lines, one object per image::

    {"image": "<path relative to the image root>", "text": "...", "model": "...", "prompt": "..."}

which is the captions format of :func:`~avalanche_exmask.benchmarks.image_text_folder.image_text_folder`
and :func:`~avalanche_exmask.benchmarks.mm_imagenet_r.mm_imagenet_r` (extra fields are ignored
there), so every caption records the model and prompt that wrote it.

Resumable: each batch is appended, flushed and ``fsync``-ed. A restarted run reads the lines
already written, drops an incomplete last line (an interrupted write; its image is captioned
again) and captions only the images not yet done, so no line is lost or duplicated.

Sharded over processes (``torchrun``, one GPU each): rank ``r`` of ``W`` captions every ``W``-th
image not yet done, into its own part file ``OUT.rank<r>-of-<W>.part`` (resumable like the output
itself); :func:`merge_caption_parts` then appends the parts' lines to ``OUT`` in image order and
removes them. Images in any part file, of this or an earlier launch with another number of
processes, count as done, so no image is captioned twice and a killed launch resumes with any
number of processes.

No line holds an empty caption (the benchmark loaders reject them): an image whose caption comes
out empty is captioned again with at least one new token that is not a special token, and if that
is empty too it is not written but reported (:attr:`CaptionRun.empty`), so a later run tries it
again.
"""
from __future__ import annotations

import glob
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from avalanche_exmask.benchmarks.records import IMAGE_EXTENSIONS
from avalanche_exmask.captions.defaults import DEFAULT_MODEL, DEFAULT_PROMPT
from avalanche_exmask.data.image_text import BadInputError, OnError
from avalanche_exmask.data.images import ImageLimits, UnusableImage, open_image

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_PROMPT",
    "CaptionRun",
    "list_images",
    "read_done",
    "load_captioner",
    "caption_images",
    "generate_captions",
    "part_path",
    "part_paths",
    "merge_caption_parts",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike


@dataclass
class CaptionRun:
    """What one :func:`generate_captions` call did.

    :ivar written: captions written by this call.
    :ivar already_done: images found captioned in the output file and not redone.
    :ivar skipped: ``(image path, reason)`` of unusable images (``on_error="skip"``); they are
        not written, so a later run tries them again.
    :ivar empty: paths of the images whose caption came out empty twice (see the module
        docstring); they are not written, so a later run tries them again.
    """

    written: int = 0
    already_done: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)


def list_images(root: PathLike) -> list[str]:
    """Image files under ``root`` (any depth), as sorted ``/``-separated relative paths.

    Hidden files and folders are ignored; images are recognised by their ending
    (:data:`~avalanche_exmask.benchmarks.records.IMAGE_EXTENSIONS`).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    found: list[str] = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [s for s in subfolders if not s.startswith(".")]
        relative = Path(folder).relative_to(root)
        found.extend(
            (relative / name).as_posix()
            for name in files
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)
        )
    return sorted(found)


def read_done(out_path: PathLike, *, model_name: str, prompt: str | None) -> set[str]:
    """Images already captioned in ``out_path``; repairs an interrupted last line.

    An incomplete last line (no final newline, or not valid JSON) is cut off the file, with a
    warning; its image counts as not done.

    :param model_name: the model of this run; lines written by another model are an error.
    :param prompt: the prompt of this run; lines written with another prompt are an error.
    :raises BadInputError: naming ``file:line`` for a malformed complete line (or one that is not
        UTF-8), or a line whose model or prompt differs from this run's (captions of one file share
        both).
    """
    out_path = Path(out_path)
    if not out_path.exists():
        return set()
    data = out_path.read_bytes()
    keep = data.rfind(b"\n") + 1  # end of the last complete line
    try:
        lines = data[:keep].decode("utf-8").split("\n")[:-1]
    except UnicodeDecodeError as error:
        line_number = data.count(b"\n", 0, error.start) + 1
        raise BadInputError(
            f"{out_path}:{line_number}: not UTF-8 text (byte 0x{data[error.start]:02x}: {error.reason})"
        ) from error
    if lines and lines[-1].strip() and not _is_json(lines[-1]):  # a torn write that ends in a newline
        keep -= len(lines.pop().encode("utf-8")) + 1
    if keep < len(data):
        logger.warning("%s: dropping an incomplete last line (interrupted run); its image is captioned again", out_path)
        with open(out_path, "r+b") as file:
            file.truncate(keep)
            file.flush()
            os.fsync(file.fileno())
    done: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{out_path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise BadInputError(f"{where}: not valid JSON ({error.msg})") from error
        if not isinstance(record, dict) or not isinstance(record.get("image"), str):
            raise BadInputError(f'{where}: expected an object with an "image" field')
        if record.get("model") != model_name or record.get("prompt") != prompt:
            raise BadInputError(
                f"{where}: written with model {record.get('model')!r} and prompt {record.get('prompt')!r}; "
                f"this run uses {model_name!r} and {prompt!r} (write to another file to mix them)"
            )
        done.add(record["image"])
    return done


def part_path(out_path: PathLike, rank: int, world_size: int) -> Path:
    """The part file rank ``rank`` of ``world_size`` processes writes beside ``out_path``."""
    out_path = Path(out_path)
    return out_path.with_name(f"{out_path.name}.rank{rank}-of-{world_size}.part")


def part_paths(out_path: PathLike) -> list[Path]:
    """The part files beside ``out_path`` (of any number of processes), sorted."""
    out_path = Path(out_path)
    return sorted(out_path.parent.glob(f"{glob.escape(out_path.name)}.rank*-of-*.part"))


def merge_caption_parts(out_path: PathLike, *, model_name: str, prompt: str | None) -> int:
    """Append the part files' captions to ``out_path`` in image order, then remove the parts.

    Every file is read with :func:`read_done` first (torn last lines dropped, model and prompt
    checked); an image already in ``out_path`` (a merge interrupted before its parts were removed)
    is not appended again. Written and ``fsync``-ed before any part is removed.

    :return: the number of lines appended.
    :raises BadInputError: as :func:`read_done`, naming the file.
    """
    out_path = Path(out_path)
    parts = part_paths(out_path)
    if not parts:
        return 0
    done = read_done(out_path, model_name=model_name, prompt=prompt)
    new: dict[str, str] = {}
    for part in parts:
        read_done(part, model_name=model_name, prompt=prompt)
        for line in part.read_text(encoding="utf-8").split("\n"):
            if line.strip():
                image = json.loads(line)["image"]
                if image not in done:
                    new.setdefault(image, line)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "a", encoding="utf-8") as out:
        out.writelines(new[image] + "\n" for image in sorted(new))
        out.flush()
        os.fsync(out.fileno())
    for part in parts:
        part.unlink()
    return len(new)


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


def load_captioner(model_name: str = DEFAULT_MODEL, *, device: str = "cpu", dtype: torch.dtype | None = None):
    """Load an image-to-text model and its processor through transformers' auto classes.

    Any model of ``AutoModelForImageTextToText`` works (InstructBLIP, BLIP-2, BLIP, GIT, ...).

    :param model_name: a hub name or a local folder saved with ``save_pretrained``.
    :param device: where the model runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).
    :param dtype: weights dtype (e.g. ``torch.float16`` on a GPU); ``None``: the checkpoint's.
    :return: ``(model in eval mode on device, processor)``.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_name)
    model = AutoModelForImageTextToText.from_pretrained(model_name, dtype=dtype)
    return model.to(device).eval(), processor


@torch.inference_mode()
def caption_images(
    images: Sequence[Image.Image],
    *,
    model: Any,
    processor: Any,
    prompt: str | None = DEFAULT_PROMPT,
    **generate_kwargs: Any,
) -> list[str]:
    """Caption a batch of PIL images (on the model's device).

    :param prompt: the instruction given with every image; ``None`` for models without one.
    :param generate_kwargs: passed to ``model.generate`` (e.g. ``max_new_tokens``, ``num_beams``).
    :return: one stripped caption per image, without the prompt.
    """
    text = [prompt] * len(images) if prompt else None
    inputs = processor(images=list(images), text=text, return_tensors="pt", padding=True)
    inputs = inputs.to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    output = model.generate(**inputs, **generate_kwargs)
    prompt_ids = inputs.get("input_ids")
    if prompt_ids is not None and output.shape[1] > prompt_ids.shape[1]:
        # decoder-only language models return the prompt before the new tokens
        if torch.equal(output[:, : prompt_ids.shape[1]], prompt_ids):
            output = output[:, prompt_ids.shape[1] :]
    return [caption.strip() for caption in processor.batch_decode(output, skip_special_tokens=True)]


def _batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _open_rgb(path: Path, limits: ImageLimits) -> Image.Image:
    """The image at ``path`` as RGB, decoded.

    :raises UnusableImage: see :func:`~avalanche_exmask.data.images.open_image`.
    """
    with open_image(path, limits=limits, decode=True) as image:
        return image.convert("RGB")


def _special_ids_but_end(model: Any, processor: Any) -> list[int]:
    """The tokenizer's special token ids (padding, unknown, image, ...) except the end of text."""
    tokenizer = getattr(processor, "tokenizer", None)
    end = model.generation_config.eos_token_id
    ends = set(end) if isinstance(end, (list, tuple)) else {end}
    return [token for token in getattr(tokenizer, "all_special_ids", []) if token not in ends]


def _caption_or_retry(images: Sequence[Image.Image], *, model: Any, processor: Any, **kwargs: Any) -> list[str]:
    """:func:`caption_images`, then once more for the captions that came out empty, with at least
    one new token that is not a special token (``min_new_tokens=1``, special tokens other than the
    end of text suppressed); the captions still empty stay ``""``."""
    captions = caption_images(images, model=model, processor=processor, **kwargs)
    retry = [index for index, caption in enumerate(captions) if not caption]
    if retry:
        again = caption_images(
            [images[index] for index in retry],
            model=model,
            processor=processor,
            **kwargs,
            min_new_tokens=1,
            suppress_tokens=_special_ids_but_end(model, processor) or None,
        )
        for index, caption in zip(retry, again, strict=True):
            captions[index] = caption
    return captions


def generate_captions(
    images_root: PathLike,
    out_path: PathLike,
    *,
    model: Any,
    processor: Any,
    model_name: str,
    prompt: str | None = DEFAULT_PROMPT,
    batch_size: int = 8,
    max_new_tokens: int = 60,
    num_beams: int = 1,
    on_error: OnError = "raise",
    progress: bool = True,
    image_limits: ImageLimits = ImageLimits(),
    rank: int | None = None,
    world_size: int | None = None,
) -> CaptionRun:
    """Caption every image under ``images_root`` into the JSON Lines file ``out_path``, resumably.

    :param images_root: the folder of images (e.g. ``imagenet-r``); paths in the output are
        relative to it.
    :param out_path: the JSON Lines output; appended to, after the images it already holds
        (see :func:`read_done`).
    :param model: an image-to-text model with ``generate`` (from :func:`load_captioner`, or any
        already built one).
    :param processor: its processor (images and prompt to model inputs; ``batch_decode``).
    :param model_name: the name recorded in every line.
    :param prompt: the instruction recorded in every line; ``None`` for models without one.
    :param batch_size: images per ``generate`` call.
    :param max_new_tokens: caption length limit in tokens.
    :param num_beams: beam-search width (1: greedy).
    :param on_error: an unusable image (unreadable, outside ``image_limits``) raises
        :class:`BadInputError` (``"raise"``) or is skipped and reported in the result (``"skip"``).
    :param progress: show a tqdm progress bar.
    :param image_limits: the image sizes allowed, checked from the header before decoding.
    :param rank: this process's share: every ``world_size``-th image not yet done, from the
        ``rank``-th; with ``world_size > 1`` they are written to :func:`part_path` (merge them with
        :func:`merge_caption_parts` once every rank is done). Default: the ``torchrun`` process
        group's rank and size (``0`` and ``1`` without one). In one process, part files left by an
        earlier sharded launch count as done and are merged at the end.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    images_root = Path(images_root)
    out_path = Path(out_path)
    from avalanche_exmask import distributed

    rank = distributed.rank() if rank is None else rank
    world_size = distributed.world_size() if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size); got rank {rank} of {world_size}")
    run = CaptionRun()
    done = read_done(out_path, model_name=model_name, prompt=prompt)
    for part in part_paths(out_path):
        done |= read_done(part, model_name=model_name, prompt=prompt)
    todo = [image for image in list_images(images_root) if image not in done][rank::world_size]
    run.already_done = len(done)
    distributed.barrier()  # every rank has read the files before any writes to its part
    target = out_path if world_size == 1 else part_path(out_path, rank, world_size)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "a", encoding="utf-8") as out, tqdm(
        total=len(todo), desc="captioning", unit="image", disable=not progress
    ) as bar:
        for batch in _batches(todo, batch_size):
            loaded, names = [], []
            for name in batch:
                try:
                    loaded.append(_open_rgb(images_root / name, image_limits))
                    names.append(name)
                except UnusableImage as error:
                    if on_error == "raise":
                        raise BadInputError(f"{images_root / name}: {error}") from error
                    run.skipped.append((str(images_root / name), str(error)))
            captions = (
                _caption_or_retry(
                    loaded,
                    model=model,
                    processor=processor,
                    prompt=prompt,
                    max_new_tokens=max_new_tokens,
                    num_beams=num_beams,
                    do_sample=False,
                )
                if loaded
                else []
            )
            run.empty.extend(str(images_root / n) for n, c in zip(names, captions, strict=True) if not c)
            written = [(n, c) for n, c in zip(names, captions, strict=True) if c]
            out.writelines(
                json.dumps({"image": n, "text": c, "model": model_name, "prompt": prompt}, ensure_ascii=False) + "\n"
                for n, c in written
            )
            out.flush()
            os.fsync(out.fileno())
            run.written += len(written)
            bar.update(len(batch))
    if world_size == 1:
        merge_caption_parts(out_path, model_name=model_name, prompt=prompt)
    if run.skipped:
        logger.warning("skipped %d unusable image(s), e.g. %s", len(run.skipped), run.skipped[0][0])
    if run.empty:
        logger.warning("%d image(s) got an empty caption and were not written, e.g. %s", len(run.empty), run.empty[0])
    return run
