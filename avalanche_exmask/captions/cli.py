"""The ``caption`` subcommand: ``python -m avalanche_exmask caption --images ROOT --out FILE``.

Under ``torchrun --nproc_per_node N -m avalanche_exmask caption ...`` the images are shared among
the ``N`` processes (one GPU each, ``cuda:LOCAL_RANK``; a gloo process group only coordinates
them) and rank 0 merges their part files into ``--out`` (see
:mod:`avalanche_exmask.captions.generate`).

:func:`add_caption_parser` registers it on an ``argparse`` subparsers object; the parsed
arguments carry ``func=run_caption``. Building the parser imports neither torch nor
transformers; :func:`run_caption` does, when the command runs.
"""
from __future__ import annotations

import argparse

from avalanche_exmask.captions.defaults import DEFAULT_MODEL, DEFAULT_PROMPT
from avalanche_exmask.data.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE

__all__ = ["add_caption_parser", "run_caption"]

#: ``--dtype`` choices: ``auto`` keeps the checkpoint's dtype, the others name a ``torch`` dtype.
_DTYPES = ("auto", "bfloat16", "float16", "float32")


def add_caption_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``caption`` subcommand to ``subparsers`` and return its parser."""
    parser = subparsers.add_parser(
        "caption",
        help="caption a folder of images with a Hugging Face image-to-text model (resumable)",
        description=(
            "Caption every image under --images into a JSON Lines file with one "
            '{"image", "text", "model", "prompt"} object per image. Rerunning the same command '
            "after an interruption captions only the images not yet in the file."
        ),
    )
    parser.add_argument("--images", required=True, help="image root folder; output paths are relative to it")
    parser.add_argument("--out", required=True, help="output JSON Lines file (appended to when it exists)")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"hub name or local folder of an AutoModelForImageTextToText model (default: {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--prompt",
        default=DEFAULT_PROMPT,
        help=f'instruction given with each image; "" for models without one (default: "{DEFAULT_PROMPT}")',
    )
    parser.add_argument("--batch-size", type=int, default=8, help="images per generate call (default: 8)")
    parser.add_argument("--max-new-tokens", type=int, default=60, help="caption length limit in tokens (default: 60)")
    parser.add_argument("--num-beams", type=int, default=1, help="beam width; 1 is greedy (default: 1)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--dtype", choices=_DTYPES, default="auto", help="weights dtype (default: the checkpoint's)"
    )
    parser.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="on an unusable image (unreadable, too large or too small): stop with an error, or skip and "
        "report it (default: raise)",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"refuse images of more pixels than this, from their header (default: {DEFAULT_MAX_PIXELS})",
    )
    parser.add_argument(
        "--min-side",
        type=int,
        default=DEFAULT_MIN_SIDE,
        help=f"refuse images whose shorter side has fewer pixels than this (default: {DEFAULT_MIN_SIDE})",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run_caption)
    return parser


def run_caption(args: argparse.Namespace) -> int:
    """Run the ``caption`` subcommand; returns the process exit status."""
    import os

    import torch

    from avalanche_exmask import distributed
    from avalanche_exmask.captions.generate import generate_captions, load_captioner, merge_caption_parts
    from avalanche_exmask.data.images import ImageLimits

    started = distributed.launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1 and not distributed.is_distributed()
    if started:
        distributed.init_distributed(0, device="cpu", backend="gloo")
    main = distributed.is_main_process()
    device = str(distributed.local_device(args.device or ("cuda" if torch.cuda.is_available() else "cpu")))
    dtype = None if args.dtype == "auto" else getattr(torch, args.dtype)
    model, processor = load_captioner(args.model, device=device, dtype=dtype)
    run = generate_captions(
        args.images,
        args.out,
        model=model,
        processor=processor,
        model_name=args.model,
        prompt=args.prompt or None,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        num_beams=args.num_beams,
        on_error=args.on_error,
        progress=not args.no_progress and main,
        image_limits=ImageLimits(max_pixels=args.max_pixels, min_side=args.min_side),
    )
    distributed.barrier()  # every part file is complete
    if main:
        merge_caption_parts(args.out, model_name=args.model, prompt=args.prompt or None)
    written = int(distributed.all_reduce_sum([run.written])[0])
    skipped = [item for items in distributed.gather_objects(run.skipped) for item in items]
    empty = [item for items in distributed.gather_objects(run.empty) for item in items]
    if started:
        distributed.close_distributed()
    if not main:
        return 0
    print(
        f"{args.out}: wrote {written} caption(s); {run.already_done} already there; "
        f"{len(skipped)} unusable image(s) skipped; {len(empty)} empty caption(s) not written "
        f"(rerun to try those images again)"
    )
    for path, reason in skipped:
        print(f"  skipped {path}: {reason}")
    for path in empty:
        print(f"  empty caption, not written: {path}")
    return 0
