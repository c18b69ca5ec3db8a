"""What masked replay costs per training step against plain replay, measured side by side in one run.

For each geometry (64 px: the shipped ``exmask-tiny``, 8-px patches, its ``synthetic`` weights;
224 px: the same towers at 224 px with 16-px patches, random weights) every buffered method
(``raw``, ``mrdc``, ``cim``, ``masking``, their defaults) is built by its registered builder on the
same embedded benchmark, from the same initial model, with the same batch sizes, and trains two
experiences. The second replays the buffer filled after the first, with the same batch composition
for every method (``class_share``: current and replayed samples in proportion to their classes);
the methods' second experiences run in threads that take turns step by step (one runs at a time),
so every method's steps meet the same load on a shared machine. Per method:

* **step**: median wall seconds per training step of the second experience, end of one step to end
  of the next: loading the batch (and decoding its records, when there are no loader workers), the
  current-data-through-codec pass, forward, backward, optimizer step; and its ratio to ``raw``'s;
* **through codec**: the part of a step before the forward (for a lossy codec, the current data's
  no-grad scoring pass, encode and decode: ``train.current_through_codec``); the step ratio with it
  removed from both steps;
* **pass**: with ``+experience``, the per-experience scoring and encoding pass of the current data
  (before the first experience's training) over that experience's training time;
* **exp-1 total**: the first experience's training time plus that pass, over ``raw``'s training time;
* **first experience**: its median step time (no replay yet: current data only, through the codec
  for a lossy one) relative to ``raw``'s;
* **masking + selection**: the buffer update after the first experience (scoring pass, herding,
  encoding) over that experience's training time (the sum of its steps' times); split into its
  **scoring** pass (the scorer's one eval forward over every candidate) and the **rest** (reading
  the candidates, herding, encoding, token importance);
* **decode**: records/s decoding the method's stored records on one thread (as in a loader worker);
  and, per codec, on records of the same images with a quarter of the patches kept;
* **data wait**: the share of the second experience's step time spent waiting for the next batch.

The current-data-through-codec pass, per geometry, in its two parts on one current batch: the
no-grad scoring forward, and the masked and JPEG codecs' encode + decode of every sample.

Token-dropping replay, per geometry: seconds per training step on a batch of masked exemplars
(a quarter of the patches kept, the others black) with the image tower seeing the full image
(``skip_empty_patches=False``), an attention mask over the discarded patches (``"attention_mask"``)
or the discarded patches dropped from the sequence (``"drop"``); replayed exemplars alone, and
mixed half and half with current images. Modes alternate step by step, so they share the load.

Everything is a ratio within one run; run with one thread (``OMP_NUM_THREADS=1``)::

    OMP_NUM_THREADS=1 python benchmarks/overhead.py --out results/overhead/overhead-cpu.json

On a GPU (``--device cuda``), geometry ``vitb16`` is open_clip ``ViT-B-16`` at 224 px with random weights
(fp32, batch 32); every timed interval ends with ``torch.cuda.synchronize``, so a step's time is its
GPU work's; the codecs' batched round trips of current data (masked, CIM) run on the GPU, every
other encode and decode on the CPU, in the training process or in its loader workers::

    python benchmarks/overhead.py --device cuda --geometries vitb16 --workers 4 --out results/overhead/overhead-gpu.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import open_clip
import torch
from avalanche.training.plugins import SupervisedPlugin

METHODS = ("raw", "mrdc", "cim", "masking")
#: a lossy method with ``train.current_codec_scores: experience`` (current data scored and encoded once
#: an experience, their records decoded in the loader) is the method's name with this suffix
EXPERIENCE_SCORES = "+experience"
CHOICES = (*METHODS, *(f"{method}{EXPERIENCE_SCORES}" for method in METHODS[1:]))
#: geometry name -> image side in pixels, and the name its results carry
GEOMETRY_SIZES = {"64": 64, "224": 224, "vitb16": 224}
GEOMETRY_LABELS = {"64": "64px", "224": "224px", "vitb16": "vitb16-224px"}
TINY_CONFIG = Path(__file__).resolve().parents[1] / "avalanche_exmask" / "models" / "configs" / "exmask-tiny.json"


class Rotation:
    """Threads that take turns: one of them runs at a time, in a fixed cyclic order, so that every
    method's steps meet the same machine load."""

    def __init__(self, names: list[str]) -> None:
        self._order = list(names)
        self._turn = 0
        self._condition = threading.Condition()

    def acquire(self, name: str) -> None:
        with self._condition:
            self._condition.wait_for(lambda: self._order[self._turn] == name)

    def release(self, name: str, leave: bool = False) -> None:
        with self._condition:
            index = self._order.index(name)
            if leave:
                self._order.pop(index)
                self._turn = index % len(self._order) if self._order else 0
            else:
                self._turn = (index + 1) % len(self._order)
            self._condition.notify_all()


def synchronize(device: str) -> None:
    """Wait for the GPU's queued work (a no-op on the CPU), so that a wall-clock interval covers it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(SupervisedPlugin):
    """Wall seconds of every training step, split into waiting for the batch, the work before the
    forward (other plugins' ``before_forward`` run first) and the rest; one list per experience.
    On a GPU each timestamp is taken after ``torch.cuda.synchronize``.

    With a :class:`Rotation`, the strategy's training takes turns with other threads' step by step:
    the turn is held from the start of the experience, handed on after every step (the time spent
    waiting for it is not timed) and given up after the experience (its buffer update included).
    """

    def __init__(self, name: str, device: str = "cpu") -> None:
        super().__init__()
        self.name = name
        self.device = device
        self.rotation: Rotation | None = None
        self.experiences: list[list[dict[str, float]]] = []
        self._last_end = self._start = self._forward = 0.0

    def before_train_dataset_adaptation(self, strategy, **kwargs) -> None:
        # the turn covers the current data's per-experience pass (``+experience``), which runs next
        if self.rotation is not None:
            self.rotation.acquire(self.name)
        self.experiences.append([])

    def before_training_epoch(self, strategy, **kwargs) -> None:
        self._last_end = time.perf_counter()

    def before_training_iteration(self, strategy, **kwargs) -> None:
        self._start = time.perf_counter()

    def before_forward(self, strategy, **kwargs) -> None:
        synchronize(self.device)
        self._forward = time.perf_counter()

    def after_training_iteration(self, strategy, **kwargs) -> None:
        synchronize(self.device)
        end = time.perf_counter()
        self.experiences[-1].append(
            {"wait": self._start - self._last_end, "before_forward": self._forward - self._start, "step": end - self._last_end}
        )
        if self.rotation is not None:
            self.rotation.release(self.name)
            self.rotation.acquire(self.name)
        self._last_end = time.perf_counter()

    def after_training_exp(self, strategy, **kwargs) -> None:
        if self.rotation is not None:
            self.rotation.release(self.name, leave=True)


def register_tiny_224(folder: Path) -> str:
    """Register ``exmask-tiny-224`` (the tiny towers at 224 px, 16-px patches) with open_clip."""
    config = json.loads(TINY_CONFIG.read_text())
    config["vision_cfg"].update(image_size=224, patch_size=16)
    (folder / "exmask-tiny-224.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    return "exmask-tiny-224"


def build(method: str, geometry: dict[str, Any], benchmark, args: argparse.Namespace):
    """``method`` built by its registered builder (from a model seeded with 0), with
    ``current_codec_scores: experience`` for a name ending in ``+experience``; returns the strategy
    and its :class:`StepTimer`."""
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training.plugins import EvaluationPlugin

    from avalanche_exmask.config import expand_runs
    from avalanche_exmask.methods.base import BuildContext
    from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
    from avalanche_exmask.registry import METHODS as REGISTERED
    from avalanche_exmask.storage.budget import budget_from_samples_per_class

    [config] = expand_runs(
        {
            "method": method.removesuffix(EXPERIENCE_SCORES), "seed": 0,
            "model": {"name": geometry["model"], "pretrained": geometry["pretrained"]},
            "benchmark": {"n_experiences": 2, "args": {"n_classes": geometry["classes"]}},
            "storage": {"budget": {"samples_per_class": args.samples_per_class, "mode": "per_class"}},
            "train": {"epochs": geometry["epochs"], "batch_size": geometry["batch_size"],
                      "current_codec_scores": "experience" if method.endswith(EXPERIENCE_SCORES) else "step"},
            "logging": {"progress": False},
        },
        source="overhead",
    )
    torch.manual_seed(0)
    model = MultimodalCLIPClassifier(config.model.name, config.model.pretrained, adapter=config.model.adapter)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.train.lr, weight_decay=0.0)
    n_classes = geometry["classes"]
    timer = StepTimer(method, args.device)
    context = BuildContext(
        config=config, model=model, optimizer=optimizer, benchmark=benchmark, n_classes=n_classes,
        budget_nbytes=budget_from_samples_per_class(args.samples_per_class, n_classes, model.image_size, model.context_length),
        template_kwargs=dict(
            model=model, optimizer=optimizer, criterion=torch.nn.CrossEntropyLoss(), train_mb_size=geometry["batch_size"],
            train_epochs=geometry["epochs"], eval_mb_size=geometry["batch_size"], device=args.device, plugins=[timer],
            evaluator=EvaluationPlugin(accuracy_metrics(stream=True), loggers=[]),
        ),
    )
    return REGISTERED.get(config.method).build(context), timer


def loader_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"num_workers": args.workers, "persistent_workers": args.workers > 0}


def train_in_turns(built: dict[str, tuple[Any, StepTimer]], experience, args: argparse.Namespace) -> None:
    """Train every built strategy on ``experience``, each in a thread, taking turns step by step."""
    rotation = Rotation(list(built))
    errors: list[BaseException] = []

    def train(strategy, timer: StepTimer) -> None:
        try:
            strategy.train(experience, **loader_kwargs(args))
        except BaseException as error:  # leave the rotation, or the other threads wait forever
            errors.append(error)
            rotation.release(timer.name, leave=True)

    threads = []
    for strategy, timer in built.values():
        timer.rotation = rotation
        threads.append(threading.Thread(target=train, args=(strategy, timer)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def measure_methods(methods: list[str], geometry: dict[str, Any], benchmark, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Every method's row (see the module docstring). Each experience is trained by every method
    in threads that take turns step by step (:class:`Rotation`)."""
    from avalanche_exmask.methods.buffered import replay_plugin_of
    from avalanche_exmask.training.codec_augmentation import CurrentThroughCodecPlugin

    built = {method: build(method, geometry, benchmark, args) for method in methods}
    buffers = {method: replay_plugin_of(strategy).storage_policy for method, (strategy, _) in built.items()}
    scorers = {method: TimedScorer(buffer.scorer) for method, buffer in buffers.items()}
    for method, buffer in buffers.items():
        buffer.scorer = scorers[method]
    first_scoring_s = {}
    for index, experience in enumerate(benchmark.train_stream):
        train_in_turns(built, experience, args)
        if index == 0:
            first_scoring_s = {method: sum(scorer.seconds) for method, scorer in scorers.items()}
    stored = {method: (buffer.codec, [r for group in buffer.records.values() for r in group]) for method, buffer in buffers.items()}
    rates = decode_rates(stored)
    rows = {}
    for method, (strategy, timer) in built.items():
        plugin = replay_plugin_of(strategy)
        first = plugin.timings[0]
        steps = timer.experiences[1][1:]  # the first step of the experience starts the loader
        records = sum(len(group) for group in buffers[method].records.values())
        passes = [p.pass_seconds for p in strategy.plugins if isinstance(p, CurrentThroughCodecPlugin)]
        train_s = sum(s["step"] for s in timer.experiences[0])
        rows[method] = {
            "method": method,
            "steps": len(steps),
            "step_s": statistics.median(s["step"] for s in steps),
            "before_forward_s": statistics.median(s["before_forward"] for s in steps),
            "data_wait_fraction": sum(s["wait"] for s in steps) / sum(s["step"] for s in steps),
            "current_batch": plugin.timings[1]["current_batch"],
            "memory_batch": plugin.timings[1]["memory_batch"],
            "update_s": first["update_s"],
            "train_s": train_s,
            "update_over_train": first["update_s"] / train_s,
            "update_scoring_over_train": first_scoring_s[method] / train_s,
            "update_rest_over_train": (first["update_s"] - first_scoring_s[method]) / train_s,
            "pass_over_train": passes[0][0] / train_s if passes and passes[0] else 0.0,
            "first_experience_step_s": statistics.median(s["step"] for s in timer.experiences[0][1:]),
            "records": records,
            "record_bytes_mean": buffers[method].accounted_nbytes / records,
            "decode_records_per_s": rates[method],
        }
    return rows


class TimedScorer:
    """A buffer's scorer that records the wall seconds of each call (the update's scoring pass)."""

    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer
        self.seconds: list[float] = []

    def __call__(self, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.scorer(*args)
        finally:
            self.seconds.append(time.perf_counter() - start)


def decode_rates(stores: dict[str, tuple[Any, list]], repeats: int = 3) -> dict[str, float]:
    """Records/s of each codec decoding its records, passes of the codecs alternating (one warm-up pass)."""
    seconds = {name: [] for name in stores}
    for repeat in range(repeats + 1):
        for name, (codec, records) in stores.items():
            start = time.perf_counter()
            for record in records:
                codec.decode(record)
            if repeat:
                seconds[name].append(time.perf_counter() - start)
    return {name: len(stores[name][1]) / statistics.median(values) for name, values in seconds.items()}


def geometry_model(geometry: dict[str, Any], device: str):
    """The geometry's classifier, initialised from seed 0 (the same weights for every measurement), on ``device``."""
    from avalanche_exmask.models.classifier import MultimodalCLIPClassifier

    torch.manual_seed(0)
    return MultimodalCLIPClassifier(geometry["model"], geometry["pretrained"], initial_out_features=geometry["classes"]).to(device)


def token_dropping(geometry: dict[str, Any], benchmark, args: argparse.Namespace) -> dict[str, Any]:
    """Seconds per training step on replayed masked exemplars (quarter of the patches kept, the rest
    black) under each ``skip_empty_patches`` mode, alone and mixed with current images."""
    from avalanche_exmask.masking.image_mask import ImageMaskRule
    from avalanche_exmask.storage.codecs import MaskedCodec

    model = geometry_model(geometry, args.device)
    model.classifier.active_units.fill_(1)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    dataset = benchmark.train_stream[0].dataset.eval()
    batch = geometry["batch_size"]
    items = [dataset[i] for i in range(2 * batch)]
    current = torch.stack([x for x, *_ in items[:batch]])
    candidates = torch.stack([x for x, *_ in items[batch:]])
    labels = torch.as_tensor([int(y) for _, y, *_ in items])
    with torch.no_grad():
        scores = model.eval().masking_scores(candidates.to(args.device)).cpu()
    codec = MaskedCodec(image_rule=ImageMaskRule(kind="ratio", ratio=0.25), patch_size=model.patch_size, background_downsample=None)
    replayed = torch.stack([codec.decode(codec.encode(candidates[i], scores[i], int(labels[batch + i]))) for i in range(batch)])
    inputs = {name: (x.to(args.device), y.to(args.device))
              for name, (x, y) in {"replayed": (replayed, labels[batch:]), "mixed": (torch.cat([current, replayed]), labels)}.items()}
    modes = {"full": False, "attention_mask": "attention_mask", "drop": "drop"}
    model.train()
    times: dict[str, dict[str, list[float]]] = {name: {mode: [] for mode in modes} for name in inputs}
    for repeat in range(args.drop_steps + 1):  # the first round warms up
        for name, (x, y) in inputs.items():
            for mode, setting in modes.items():
                model.skip_empty_patches = setting
                synchronize(args.device)
                start = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(model(x), y).backward()
                optimizer.step()
                synchronize(args.device)
                if repeat:
                    times[name][mode].append(time.perf_counter() - start)
    out: dict[str, Any] = {"batch": batch, "kept_fraction": 0.25, "patches": model.num_patches}
    for name, per_mode in times.items():
        medians = {mode: statistics.median(values) for mode, values in per_mode.items()}
        out[name] = {"step_s": medians, "vs_full": {mode: medians[mode] / medians["full"] for mode in modes}}
    return out


def through_codec_parts(geometry: dict[str, Any], benchmark, args: argparse.Namespace) -> dict[str, Any]:
    """Seconds of :func:`~avalanche_exmask.training.codec_augmentation.through_codec`'s parts on
    one current batch: the no-grad scoring pass (the full ``masking_scores``, and the patch attention
    alone, ``patch_attention_scores``, which the masked codec's defaults use); the codec's encode +
    decode of every sample, record by record (masked, JPEG and CIM codecs, method defaults); and the
    batched round trip on the device (``round_trip``, masked and CIM) that replaces the record path
    where a codec has one. Medians over ``args.drop_steps`` rounds; the parts alternate."""
    from avalanche_exmask.storage.codecs import CimCodec, JpegCodec, MaskedCodec

    model = geometry_model(geometry, args.device).eval()
    dataset = benchmark.train_stream[0].dataset.eval()
    items = [dataset[i] for i in range(geometry["batch_size"])]
    x = torch.stack([sample for sample, *_ in items]).to(args.device)
    labels = torch.as_tensor([int(label) for _, label, *_ in items])
    codecs = {"masked": MaskedCodec(patch_size=model.patch_size), "jpeg": JpegCodec(), "cim": CimCodec(patch_size=model.patch_size)}
    parts = ["scoring", "patch_attention", *(f"{name}_encode_decode" for name in codecs), "masked_round_trip", "cim_round_trip"]
    times: dict[str, list[float]] = {part: [] for part in parts}
    for repeat in range(args.drop_steps + 1):
        synchronize(args.device)
        start = time.perf_counter()
        with torch.no_grad():
            device_scores = model.masking_scores(x)
        synchronize(args.device)
        scores = device_scores.cpu()
        elapsed = {"scoring": time.perf_counter() - start}
        start = time.perf_counter()
        with torch.no_grad():
            model.patch_attention_scores(x.image)
        synchronize(args.device)
        elapsed["patch_attention"] = time.perf_counter() - start
        for name, codec in codecs.items():
            start = time.perf_counter()
            for i, (sample, label, *_) in enumerate(items):
                codec.decode(codec.encode(sample, scores[i], int(label)))
            elapsed[f"{name}_encode_decode"] = time.perf_counter() - start
        for name in ("masked", "cim"):
            start = time.perf_counter()
            codecs[name].round_trip(x, device_scores, labels)
            synchronize(args.device)
            elapsed[f"{name}_round_trip"] = time.perf_counter() - start
        if repeat:
            for key, value in elapsed.items():
                times[key].append(value)
    return {"batch": len(items), **{f"{key}_s": statistics.median(values) for key, values in times.items()}}


def codec_decode_rates(geometry: dict[str, Any], benchmark, args: argparse.Namespace) -> dict[str, float]:
    """Records/s, one thread, of every codec decoding records of the same ``2 x batch`` training
    images scored by the geometry's model (masked: a quarter of the patches kept, by the ratio rule).
    Passes over the codecs alternate, so they share the load."""
    from avalanche_exmask.masking.image_mask import ImageMaskRule
    from avalanche_exmask.storage.codecs import CimCodec, JpegCodec, MaskedCodec, RawCodec

    model = geometry_model(geometry, args.device).eval()
    dataset = benchmark.train_stream[0].dataset.eval()
    items = [dataset[i] for i in range(2 * geometry["batch_size"])]
    with torch.no_grad():
        scores = model.masking_scores(torch.stack([sample for sample, *_ in items]).to(args.device)).cpu()
    quarter = ImageMaskRule(kind="ratio", ratio=0.25)
    codecs = {
        "raw": RawCodec(),
        "jpeg q50": JpegCodec(),
        "cim": CimCodec(patch_size=model.patch_size),
        "masked (mean-colour background)": MaskedCodec(image_rule=quarter, patch_size=model.patch_size),
        "masked (black background)": MaskedCodec(image_rule=quarter, patch_size=model.patch_size, background_downsample=None),
        "masked (JPEG q50 patches)": MaskedCodec(image_rule=quarter, patch_size=model.patch_size, patch_jpeg_quality=50),
    }
    stores = {
        name: (codec, [codec.encode(sample, scores[i], int(label)) for i, (sample, label, *_) in enumerate(items)])
        for name, codec in codecs.items()
    }
    return decode_rates(stores, repeats=5)


def print_decode_table(results: dict[str, Any]) -> None:
    """Per geometry, every codec's decoding rate (records/s, one thread)."""
    names = list(next(iter(results["geometries"].values()))["decode_records_per_s"])
    print(f"{'geometry':<8} " + " ".join(f"{name:>{max(9, len(name))}}" for name in names) + "   (decode, records/s, one thread)")
    for geometry, block in results["geometries"].items():
        rates = block["decode_records_per_s"]
        print(f"{geometry:<8} " + " ".join(f"{rates[name]:>{max(9, len(name))}.0f}" for name in names))


def print_table(results: dict[str, Any]) -> None:
    """The one table: per geometry and method, and the token-dropping rows."""
    header = (f"{'geometry':<8} {'method':<18} {'step ms':>8} {'x raw':>6} {'codec ms':>9} {'x raw w/o':>9} "
              f"{'exp-1 x raw':>11} {'exp-1 total':>11} {'update/train':>12} {'scoring':>8} {'rest':>6} {'pass/train':>10} "
              f"{'decode/s':>9} {'data wait':>9}")
    print(header)
    for geometry, block in results["geometries"].items():
        raw = block["methods"]["raw"]
        for method, row in block["methods"].items():
            without = (row["step_s"] - row["before_forward_s"]) / (raw["step_s"] - raw["before_forward_s"])
            print(f"{geometry:<8} {method:<18} {1000 * row['step_s']:>8.1f} {row['step_vs_raw']:>6.2f} "
                  f"{1000 * row['before_forward_s']:>9.1f} {without:>9.2f} {row['first_experience_step_vs_raw']:>11.2f} "
                  f"{row['train_s'] * (1 + row.get('pass_over_train', 0.0)) / raw['train_s']:>11.2f} "
                  f"{row['update_over_train']:>12.1%} {row.get('update_scoring_over_train', float('nan')):>8.1%} "
                  f"{row.get('update_rest_over_train', float('nan')):>6.1%} {row.get('pass_over_train', 0.0):>10.1%} "
                  f"{row['decode_records_per_s']:>9.0f} {row['data_wait_fraction']:>9.1%}")
    print(f"\n{'geometry':<8} {'batch':<9} {'full ms':>8} {'attn-mask':>9} {'drop':>6}   (token-dropping replay, x full)")
    for geometry, block in results["geometries"].items():
        for name in ("replayed", "mixed"):
            row = block["token_dropping"][name]
            print(f"{geometry:<8} {name:<9} {1000 * row['step_s']['full']:>8.1f} {row['vs_full']['attention_mask']:>9.2f} "
                  f"{row['vs_full']['drop']:>6.2f}")
    print()
    print_decode_table(results)
    print_parts_table(results)


def print_parts_table(results: dict[str, Any]) -> None:
    """The current-data pass's parts per geometry (milliseconds on one batch)."""
    print(f"\n{'geometry':<8} {'batch':>5} {'scoring ms':>10} {'attention only ms':>17} {'masked enc+dec ms':>17} "
          f"{'masked round trip ms':>20} {'cim enc+dec ms':>14} {'cim round trip ms':>17} {'jpeg enc+dec ms':>15}"
          "   (current data through codec)")
    for geometry, block in results["geometries"].items():
        parts = block["through_codec_parts"]
        print(f"{geometry:<8} {parts['batch']:>5} {1000 * parts['scoring_s']:>10.1f} {1000 * parts['patch_attention_s']:>17.1f} "
              f"{1000 * parts['masked_encode_decode_s']:>17.1f} {1000 * parts['masked_round_trip_s']:>20.1f} "
              f"{1000 * parts['cim_encode_decode_s']:>14.1f} {1000 * parts['cim_round_trip_s']:>17.1f} "
              f"{1000 * parts['jpeg_encode_decode_s']:>15.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--geometries", nargs="+", default=["64", "224"], choices=list(GEOMETRY_SIZES),
                        help="64 and 224: the tiny towers (CPU); vitb16: ViT-B-16 at 224 px, random weights (for a GPU)")
    parser.add_argument("--device", default="cpu", help="where the model trains (cpu, cuda); records are encoded and decoded on the CPU")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=CHOICES)
    parser.add_argument("--samples-per-class", type=int, default=5)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the training loader")
    parser.add_argument("--drop-steps", type=int, default=5, help="timed steps per token-dropping mode")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per experience (default: 5 at 64 px, 3 at 224 px)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--decode-only", action="store_true", help="measure the codecs' decoding rates only (about a minute)")
    parser.add_argument("--parts-only", action="store_true",
                        help="measure the current-data pass's parts only (scoring, attention alone, encode + decode; "
                             "--drop-steps rounds, alternating)")
    parser.add_argument("--out", default="results/overhead/overhead-cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from avalanche_exmask.benchmarks.synthetic import synthetic_multimodal

    results: dict[str, Any] = {"args": vars(args), "torch": torch.__version__, "geometries": {},
                               "device_name": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"}
    with tempfile.TemporaryDirectory() as folder:
        geometries = {
            "64": {"model": "exmask-tiny", "pretrained": "synthetic", "classes": 10, "per_class": 40, "batch_size": 32, "epochs": 5},
            "224": {"model": register_tiny_224(Path(folder)), "pretrained": None, "classes": 6, "per_class": 24, "batch_size": 16,
                    "epochs": 3},
            "vitb16": {"model": "ViT-B-16", "pretrained": None, "classes": 10, "per_class": 64, "batch_size": 32, "epochs": 3},
        }
        for name in args.geometries:
            geometry, size = geometries[name], GEOMETRY_SIZES[name]
            geometry["epochs"] = args.epochs or geometry["epochs"]
            benchmark = synthetic_multimodal(
                n_classes=geometry["classes"], n_experiences=2, train_per_class=geometry["per_class"], test_per_class=2,
                model_name=geometry["model"], image_size=size, seed=0,
            )
            if args.decode_only:
                rates = codec_decode_rates(geometry, benchmark, args)
                results["geometries"][GEOMETRY_LABELS[name]] = {"geometry": geometry, "decode_records_per_s": rates}
                continue
            if args.parts_only:
                parts = through_codec_parts(geometry, benchmark, args)
                results["geometries"][GEOMETRY_LABELS[name]] = {"geometry": geometry, "through_codec_parts": parts}
                continue
            rows = measure_methods(list(dict.fromkeys(["raw", *args.methods])), geometry, benchmark, args)
            for row in rows.values():
                row["step_vs_raw"] = row["step_s"] / rows["raw"]["step_s"]
                row["first_experience_step_vs_raw"] = row["first_experience_step_s"] / rows["raw"]["first_experience_step_s"]
                print(name, row["method"], f"{1000 * row['step_s']:.1f} ms", f"x{row['step_vs_raw']:.2f}", flush=True)
            results["geometries"][GEOMETRY_LABELS[name]] = {
                "geometry": geometry, "methods": rows, "token_dropping": token_dropping(geometry, benchmark, args),
                "through_codec_parts": through_codec_parts(geometry, benchmark, args),
                "decode_records_per_s": codec_decode_rates(geometry, benchmark, args),
            }
    if args.parts_only:
        print_parts_table(results)
    else:
        (print_decode_table if args.decode_only else print_table)(results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
