"""Refactoring guard: every case of a tiny synthetic run gives byte-identical results across commits.

Each case runs :func:`~avalanche_exmask.experiment.run_experiment` on the tiny synthetic benchmark
(3 experiences, 6 classes, random weights, one epoch), for every registered method and for
variants of the replay stack, and keeps what a refactor must not change: the
accuracy matrix, the per-class accuracy matrix, the buffer's SHA-256 over its records and its bytes.
The masking and raw cases are run twice more through a checkpoint: written after every experience
and resumed after the second one, which must give the same figures.

Record a reference at one commit, compare at another::

    OMP_NUM_THREADS=1 python benchmarks/identity_check.py --out /tmp/identity-base.json
    OMP_NUM_THREADS=1 python benchmarks/identity_check.py --compare /tmp/identity-base.json

Prints one line per case (``case  acc-sha  class-acc-sha  buffer-sha  bytes``) and, with
``--compare``, ``IDENTICAL`` or the cases that differ (exit status 1).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

TINY: dict[str, Any] = {
    "model": {"pretrained": None},
    "logging": {"progress": False},
    "benchmark": {"n_experiences": 3, "args": {"n_classes": 6, "train_per_class": 6, "test_per_class": 2}},
    "train": {"epochs": 1, "batch_size": 8},
    "storage": {"budget": {"samples_per_class": 2}},
}

#: case name -> (method, config changes merged into :data:`TINY`).
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "naive": ("naive", {}),
    "replay": ("replay", {}),
    "joint": ("joint", {}),
    "l2p": ("l2p", {"model": {"pretrained": None, "adapter": "none"}}),
    "dualprompt": ("dualprompt", {"model": {"pretrained": None, "adapter": "none"}}),
    "ease": ("ease", {"model": {"pretrained": None, "adapter": "none"}}),
    "raw": ("raw", {}),
    "mrdc": ("mrdc", {}),
    "cim": ("cim", {}),
    "masking": ("masking", {}),
    "masking-text": ("masking", {"storage": {"options": {"masked": {"text_rule": {"mode": "both"}}}}}),
    "masking-stack": ("masking", {
        "storage": {"budget": {"samples_per_class": 2, "mode": "total"}, "selection": "random"},
        "train": {"epochs": 1, "batch_size": 8, "weight_aligning": True, "current_through_codec": 0.5,
                  "augmentation": {"p_fill": 0.5, "p_token_mix": 0.5, "p_swap_text": 0.5}},
    }),
    "masking-black-background": ("masking", {"storage": {"options": {"masked": {"background_downsample": None}}}}),
    "masking-background-2": ("masking", {"storage": {"options": {"masked": {
        "background_downsample": 2, "image_rule": {"kind": "ratio", "ratio": 0.35}}}}}),
    "masking-jpeg-patches": ("masking", {"storage": {"options": {"masked": {"patch_jpeg_quality": 50}}}}),
    "masking-loader-workers": ("masking", {"loader": {"num_workers": 2}}),
    "masking-scores-experience": ("masking", {"train": {"current_codec_scores": "experience"}}),
    "masking-scores-experience-loader-workers": (
        "masking", {"train": {"current_codec_scores": "experience"}, "loader": {"num_workers": 2}}
    ),
    "mrdc-loader-workers": ("mrdc", {"loader": {"num_workers": 2}}),
    "mrdc-half-through-codec": ("mrdc", {"train": {"epochs": 1, "batch_size": 8, "current_through_codec": 0.5}}),
    "raw-stack": ("raw", {"train": {"epochs": 1, "batch_size": 8, "weight_aligning": True, "memory_batch": "class_balanced",
                                    "augmentation": {"p_fill": 0.5}}}),
}


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        merged[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def _sha(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _digest(results: dict[str, Any]) -> dict[str, Any]:
    return {
        "accuracy_matrix": _sha(results["accuracy_matrix"]),
        "class_accuracy_matrix": _sha(results["class_accuracy_matrix"]),
        "buffer_sha256": (results.get("buffer_sha256") or "-")[:16],
        "buffer_nbytes": results.get("buffer_nbytes"),
        "ncm_final_accuracy": results.get("ncm_final_accuracy"),
    }


def run_case(name: str, *, resume: bool) -> dict[str, Any]:
    """The digest of case ``name``; with ``resume``, of a run interrupted after two experiences and
    resumed from its checkpoint."""
    from avalanche.training.templates import SupervisedTemplate

    from avalanche_exmask.config import RunConfig
    from avalanche_exmask.experiment import run_experiment

    method, changes = CASES[name]
    config = RunConfig.from_dict({"method": method, **_merge(TINY, changes)})
    if not resume:
        return _digest(run_experiment(config))
    real_train = SupervisedTemplate.train
    calls = {"n": 0}

    def stop_at_third(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("stopped")
        return real_train(self, *args, **kwargs)

    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "run.ckpt.safetensors"
        SupervisedTemplate.train = stop_at_third  # type: ignore[method-assign]
        try:
            run_experiment(config, checkpoint=checkpoint)
        except KeyboardInterrupt:
            pass
        finally:
            SupervisedTemplate.train = real_train  # type: ignore[method-assign]
        return _digest(run_experiment(config, checkpoint=checkpoint))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="write the digests to this JSON file")
    parser.add_argument("--compare", help="compare with the digests of this JSON file")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    args = parser.parse_args(argv)
    digests: dict[str, Any] = {}
    runs = [(name, False) for name in args.cases] + [(name, True) for name in ("raw", "masking") if name in args.cases]
    for name, resume in runs:
        key = name + ("+resume" if resume else "")
        digests[key] = run_case(name, resume=resume)
        d = digests[key]
        print(f"{key:<16} {d['accuracy_matrix']} {d['class_accuracy_matrix']} {d['buffer_sha256']} {d['buffer_nbytes']}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(digests, indent=1))
    if args.compare:
        reference = json.loads(Path(args.compare).read_text())
        differ = [key for key in digests if reference.get(key) != digests[key]]
        print("IDENTICAL" if not differ else f"DIFFER: {differ}")
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
