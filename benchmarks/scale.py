"""Per-stage cost of the pipeline at the real geometry: open_clip ViT-B-16 (random weights), 224 px.

Synthetic JPEGs of a realistic size (500 x 375, smooth content with an object) are written to disk
in MM-ImageNet-R's layout (``imagenet-r/<wnid>/*.jpg`` and a captions JSONL), the benchmark is
built with :func:`~avalanche_exmask.benchmarks.mm_imagenet_r.mm_imagenet_r`, and each stage is
timed on its own:

1. loading: a DataLoader over the training images (read, decode, resize to 224, tokenise), for
   several ``num_workers``; images/s;
2. training step (SSF, AdamW): current data only, and current + replayed masked exemplars with
   token-dropping replay; images/s, and FLOPs per sample (``FlopCounterMode``, forward + backward);
3. masking + buffer update: scoring pass, herding, encoding; images/s; then decoding of the stored
   records (records/s) on one thread and through DataLoader workers;
4. evaluation: forward passes without gradients; images/s;
5. the byte budget at 5 samples/class: record sizes, exemplars per class and decoding rate (one
   thread, as in a DataLoader worker) of every codec;
6. peak resident memory after each stage (``ru_maxrss``) and, on a GPU, peak allocated memory;
7. the fraction of the current-data training time spent waiting for the loader
   (``data_wait_fraction``) and, on a GPU with NVML, its utilisation.

Usage (about 10 minutes on 2 busy CPU cores)::

    python benchmarks/scale.py --out results/scale/scale-cpu.json
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from avalanche_exmask.benchmarks.mm_imagenet_r import mm_imagenet_r
from avalanche_exmask.masking.image_mask import ImageMaskRule
from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
from avalanche_exmask.registry import CODECS
from avalanche_exmask.storage.budget import budget_from_samples_per_class
from avalanche_exmask.storage.buffer import ByteBudgetBuffer
from avalanche_exmask.storage.codecs import MaskedCodec
from avalanche_exmask.training.mixed_precision import PRECISIONS

WNIDS_FILE = Path(__file__).resolve().parents[1] / "avalanche_exmask" / "benchmarks" / "resources" / "imagenet_r_classes.json"


def write_imagenet_r(root: Path, n_classes: int, per_class: int, size: tuple[int, int] = (500, 375)) -> Path:
    """``root/imagenet-r/<wnid>/<i>.jpg`` (smooth background, one bright ellipse) and captions."""
    wnids = sorted(json.loads(WNIDS_FILE.read_text()))[:n_classes]
    rng = np.random.default_rng(0)
    lines = []
    for wnid in wnids:
        folder = root / "imagenet-r" / wnid
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            low = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
            image = Image.fromarray(low).resize(size, Image.BICUBIC)
            pixels = np.asarray(image).copy()
            cy, cx = rng.integers(80, size[1] - 80), rng.integers(80, size[0] - 80)
            yy, xx = np.ogrid[: size[1], : size[0]]
            pixels[((yy - cy) / 60.0) ** 2 + ((xx - cx) / 90.0) ** 2 <= 1] = rng.integers(0, 256, 3)
            Image.fromarray(pixels).save(folder / f"{i}.jpg", format="JPEG", quality=90)
            lines.append(json.dumps({"image": f"{wnid}/{i}.jpg", "text": f"a rendition of a {wnid} with a coloured shape, picture {i}"}))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return root


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def loading_rate(dataset, batch_size: int, workers: int, limit: int) -> float:
    """Images/s of iterating ``limit`` items of ``dataset`` in batches (first batch excluded)."""
    loader = DataLoader(torch.utils.data.Subset(dataset, range(min(limit, len(dataset)))), batch_size=batch_size,
                        num_workers=workers, persistent_workers=False)
    iterator = iter(loader)
    next(iterator)
    start, n = time.perf_counter(), 0
    for x, *_ in iterator:
        n += len(x.image)
    return n / (time.perf_counter() - start)


def step_flops(model, batch, labels) -> int:
    """FLOPs of one training step's forward + backward (no optimizer)."""
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(model(batch), labels).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def eval_flops(model, batch) -> int:
    """FLOPs of one forward pass without gradients (MHA's fast path off: FlopCounterMode misses it)."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(batch)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return counter.get_total_flops()


def timed_steps(model, optimizer, batches, device, autocast, warmup: int) -> float:
    """Seconds per step over ``batches``, the first ``warmup`` steps not timed."""
    times = []
    for i, (x, y) in enumerate(batches):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        sync(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            logits = model(x)
        torch.nn.functional.cross_entropy(logits.float(), y).backward()
        optimizer.step()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return sum(times) / len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=30, help="images per class written to disk (80%% train)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2, help="timed training steps per variant")
    parser.add_argument("--warmup", type=int, default=None, help="untimed first steps (default: 0 on a CPU, 3 on a GPU)")
    parser.add_argument("--update-candidates", type=int, default=4, help="candidates scored per class in the buffer update")
    parser.add_argument("--eval-images", type=int, default=12)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32")
    parser.add_argument("--out", default="results/scale/scale-cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = PRECISIONS[args.precision]
    warmup = args.warmup if args.warmup is not None else (3 if device.type == "cuda" else 0)

    def autocast():
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

    out: dict = {"args": vars(args), "device": str(device), "torch": torch.__version__,
                 "cuda_available": torch.cuda.is_available()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        write_imagenet_r(root, args.classes, args.per_class)
        out["write_images_s"] = time.perf_counter() - start
        out["jpeg_bytes_mean"] = float(np.mean([p.stat().st_size for p in root.rglob("*.jpg")]))
        start = time.perf_counter()
        benchmark = mm_imagenet_r(root, root / "captions.jsonl", n_experiences=2, model_name="ViT-B-16", seed=0)
        out["build_benchmark_s"] = time.perf_counter() - start
        train = benchmark.train_stream[0].dataset
        out["images_on_disk"] = args.classes * args.per_class
        out["train_images_experience_0"] = len(train)

        # 1. loading
        out["loading_images_per_s"] = {
            str(w): loading_rate(train, args.batch_size, w, limit=len(train)) for w in args.workers
        }
        out["peak_rss_mib_after_loading"] = peak_rss_mib()
        print("loading", out["loading_images_per_s"], flush=True)

        # 2. training step
        torch.manual_seed(0)
        model = MultimodalCLIPClassifier("ViT-B-16", pretrained=None, skip_empty_patches="drop",
                                         initial_out_features=args.classes).to(device)
        model.classifier.active_units.fill_(1)
        out["parameters"] = model.trainable_parameter_report()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        loader = DataLoader(train, batch_size=args.batch_size, shuffle=False, num_workers=max(args.workers),
                            pin_memory=device.type == "cuda", persistent_workers=max(args.workers) > 0)
        model.train()
        batches, waits = [], []

        def fed_from_loader():
            """Batches straight from the loader, the time blocked on each one recorded."""
            iterator = iter(loader)
            for _ in range(args.steps + warmup):
                start = time.perf_counter()
                x, y, *_ = next(iterator)
                waits.append(time.perf_counter() - start)
                batches.append((x, y))
                yield x, y

        start = time.perf_counter()
        current_step_s = timed_steps(model, optimizer, fed_from_loader(), device, autocast, warmup)
        total_s = time.perf_counter() - start
        # the fraction of the timed steps' wall time spent waiting for data (0: the model step is the bottleneck)
        out["data_wait_fraction"] = sum(waits[warmup:]) / (sum(waits[warmup:]) + current_step_s * args.steps)
        out["current_data_wall_s"] = total_s
        if device.type == "cuda":
            try:
                out["gpu_utilization_percent_at_end"] = torch.cuda.utilization(device)
            except Exception as error:  # needs pynvml / amdsmi
                out["gpu_utilization_percent_at_end"] = f"unavailable: {error}"
        out["train_current_images_per_s"] = args.batch_size / current_step_s
        print("train current", out["train_current_images_per_s"], flush=True)

        # masked exemplars with black discarded patches at a fixed kept fraction, as replay
        flops = {}
        x0, y0 = batches[0]
        with torch.no_grad():
            model.eval()
            scores = model.masking_scores(x0.to(device)).cpu()
            model.train()
        out["threshold_rule_kept_fraction_random_init"] = float(ImageMaskRule()(scores.patch_attention).float().mean())
        model.train()
        flops["full"] = step_flops(model, x0[:1].to(device), y0[:1].to(device))
        keep_fractions = {"0.25": ImageMaskRule(kind="ratio", ratio=0.25), "0.5": ImageMaskRule(kind="ratio", ratio=0.5)}
        replayed_batches = {}
        for name, rule in keep_fractions.items():
            codec = MaskedCodec(image_rule=rule, patch_size=16, background_downsample=None)
            replayed_batches[name] = torch.stack([codec.decode(codec.encode(x0[i], scores[i], int(y0[i]))) for i in range(len(y0))])
            flops[f"replayed_kept_{name}"] = step_flops(model, replayed_batches[name][:1].to(device), y0[:1].to(device))
        # time the replay of a batch at a quarter of the patches: current + replayed in one step
        replayed = replayed_batches["0.25"]
        mixed = [(torch.cat([x, replayed]), torch.cat([y, y0])) for x, y in batches]
        step_s = timed_steps(model, optimizer, mixed, device, autocast, warmup)
        out["train_current_plus_replay_kept_0.25_images_per_s"] = 2 * args.batch_size / step_s
        # the replayed half's own cost: the mixed step minus the current-only step
        out["replayed_sample_ms_kept_0.25"] = 1000 * (step_s - current_step_s) / args.batch_size
        print("replay", out["train_current_plus_replay_kept_0.25_images_per_s"], flush=True)
        out["current_sample_ms"] = 1000 * current_step_s / args.batch_size
        out["train_flops_per_sample"] = flops
        out["eval_flops_per_sample_full"] = eval_flops(model.eval(), x0[:1].to(device))
        model.skip_empty_patches = "attention_mask"
        with torch.no_grad():
            masked_view = model.embed(replayed[:2].to(device))
            model.skip_empty_patches = "drop"
            dropped_view = model.embed(replayed[:2].to(device))
        out["drop_vs_attention_mask_max_abs_diff"] = float((masked_view - dropped_view).abs().max())
        out["peak_rss_mib_after_training"] = peak_rss_mib()

        # 3. masking + buffer update, then record decoding
        n_classes_0 = len(benchmark.train_stream[0].classes_in_this_experience)
        budget = budget_from_samples_per_class(5, args.classes, 224, 77)
        buffer = ByteBudgetBuffer(max_size=budget, codec=MaskedCodec(patch_size=16), mode="per_class",
                                  total_num_classes=args.classes, candidates_per_class=args.update_candidates)
        strategy = SimpleNamespace(model=model, device=device, experience=benchmark.train_stream[0])
        sync(device)
        start = time.perf_counter()
        buffer.update(strategy, num_workers=max(args.workers))
        sync(device)
        update_s = time.perf_counter() - start
        out["masking_update_images_per_s"] = n_classes_0 * args.update_candidates / update_s
        print("update", out["masking_update_images_per_s"], flush=True)
        records = [r for rs in buffer.records.values() for r in rs]
        torch.set_num_threads(1)  # as in a DataLoader worker
        start = time.perf_counter()
        for record in records * 3:
            buffer.codec.decode(record)
        out["masked_decode_records_per_s_one_thread"] = 3 * len(records) / (time.perf_counter() - start)
        out["masked_decode_records_per_s_loader"] = {
            str(w): loading_rate(buffer.buffer.concat(buffer.buffer).concat(buffer.buffer), args.batch_size, w, 10**9)
            for w in args.workers
        }
        out["peak_rss_mib_after_update"] = peak_rss_mib()

        # 5. byte budget: every codec on the scored candidates of the first batch
        share = budget // args.classes
        per_codec = {}
        for name in CODECS.names():
            options = {"patch_size": 16} if "patch_size" in CODECS.get(name).codec.__dataclass_fields__ else {}
            codec = CODECS.get(name)(**options)
            sizes, decode_times = [], []
            for i in range(len(y0)):
                record = codec.encode(x0[i], scores[i], int(y0[i]))
                sizes.append(record.nbytes)
                start = time.perf_counter()
                codec.decode(record)
                decode_times.append(time.perf_counter() - start)
            per_codec[name] = {"mean_record_bytes": float(np.mean(sizes)), "exemplars_per_class": share / float(np.mean(sizes)),
                               "decode_records_per_s": 1 / float(np.mean(decode_times))}
        torch.set_num_threads(args.threads)
        out["budget_5_per_class"] = {"share_bytes": share, "codecs": per_codec}
        for kept in (0.15, 0.25, 0.35, 0.5):
            n = round(196 * kept)
            nbytes = 25 + n * 768 + (196 - n) * 3 + 2 * 20
            out["budget_5_per_class"][f"masked_exemplars_per_class_at_kept_{kept}"] = share / nbytes

        # 4. evaluation
        model.eval()
        eval_loader = DataLoader(benchmark.test_stream[0].dataset, batch_size=args.batch_size, num_workers=max(args.workers))
        eval_batches = [x for (x, *_), _ in zip(eval_loader, range(warmup + math.ceil(args.eval_images / args.batch_size)), strict=False)]
        with torch.no_grad():
            for x in eval_batches[:warmup]:
                with autocast():
                    model(x.to(device))
            sync(device)
            start, n = time.perf_counter(), 0
            for x in eval_batches[warmup:]:
                with autocast():
                    model(x.to(device))
                n += len(x.image)
            sync(device)
        out["eval_images_per_s"] = n / (time.perf_counter() - start)
        out["peak_rss_mib"] = peak_rss_mib()
        if device.type == "cuda":
            out["peak_cuda_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
