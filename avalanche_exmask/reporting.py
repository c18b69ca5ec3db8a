"""Tables from results files: mean and spread over seeds, one row per (method, variant), and
paired differences between methods with 95% confidence intervals.

Runs of two methods are *paired* when they share a seed (hence the class order, the model's head
initialisation and the data order). A paired difference is the per-seed difference of a figure;
its 95% interval is Student's ``t`` interval over the seeds, ``mean ± t_{0.975, n-1} s / sqrt(n)``.
"Beats" is said only where the interval excludes 0.
"""
from __future__ import annotations

import functools
import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["load_results", "aggregate", "markdown_table", "paired_differences", "t_interval", "class_forgetting"]

#: Figures every run has (key in the results dict, column title).
BASE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("final_accuracy", "final acc %"),
    ("average_incremental_accuracy", "avg inc acc %"),
    ("forgetting", "forgetting %"),
)

#: Titles of the figures methods declare (``figures`` in a results file); others show their key.
FIGURE_TITLES: dict[str, str] = {
    "ncm_final_accuracy": "NCM acc %",
    "exemplars_per_class": "exemplars/class",
    "buffer_nbytes": "buffer bytes",
    "kept_patch_fraction": "kept patches",
    "kept_token_fraction": "kept tokens",
}

#: Dotted config paths never used to tell variants apart.
NOT_VARIANTS = ("seed", "device", "logging.", "eval.batch_size")


def flat_config(config: dict[str, Any]) -> dict[str, Any]:
    """A run's config as ``{dotted path: value}``, from the nested format or the flat format of
    earlier versions (mapped by :data:`avalanche_exmask.config_flat.FLAT_FIELDS`)."""
    from avalanche_exmask.config_flat import FLAT_FIELDS

    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node and not prefix.endswith("benchmark.args"):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else key, value)
        else:
            flat[prefix] = node

    if isinstance(config.get("benchmark"), dict) or isinstance(config.get("storage"), dict):
        walk("", config)
    else:
        for key, value in config.items():
            flat[FLAT_FIELDS.get(key, key)] = value
    return flat


def figure_columns(runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The base columns, the figures the runs' methods declare (in first-seen order), wall time."""
    keys: list[str] = []
    for run in runs:
        declared = run.get("figures", [key for key in FIGURE_TITLES if key in run])
        keys.extend(key for key in declared if key not in keys)
    return [*BASE_COLUMNS, *((key, FIGURE_TITLES.get(key, key)) for key in keys), ("wall_seconds", "wall s")]


def load_results(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Read results JSON files (files or folders of ``*.json``), sorted by path.

    :raises ValueError: naming a file that is not a results file.
    """
    files: list[Path] = []
    for path in map(Path, paths):
        files.extend(sorted(path.glob("*.json")) if path.is_dir() else [path])
    runs = []
    for file in sorted(files):
        run = json.loads(file.read_text())
        if "config" not in run or "final_accuracy" not in run:
            raise ValueError(f"{file} is not a results file (no 'config' / 'final_accuracy')")
        run["_file"] = str(file)
        runs.append(run)
    return runs


@functools.lru_cache(maxsize=1)
def _schema_defaults() -> dict[str, Any]:
    """``{dotted path: default}`` of today's run config and of every registered codec's options: the
    value a results file written before a field existed stands for (it ran with that behaviour)."""
    from avalanche_exmask.config_schema import RunConfig
    from avalanche_exmask.registry import CODECS
    from avalanche_exmask.storage.codec_options import resolve_codec_options

    defaults = flat_config(RunConfig().to_dict())
    for name in CODECS.names():
        for key, value in flat_config({"storage": {"options": {name: resolve_codec_options(name, {})}}}).items():
            defaults[key] = value
    return defaults


def variant_names(runs: list[dict[str, Any]]) -> list[str]:
    """A name per run: its method, plus the config fields that vary among the runs of that method
    (``"masking (text_rule.mode=none)"``; seeds, devices and logging never count). A field a results
    file lacks (written before the field existed) counts as today's default."""
    defaults = _schema_defaults()
    flats = [{**defaults, **flat_config(run["config"])} for run in runs]
    varying: dict[str, list[str]] = {}
    for method in {flat["method"] for flat in flats}:
        members = [flat for flat in flats if flat["method"] == method]
        keys = sorted({key for flat in members for key in flat})
        varying[method] = [
            key for key in keys
            if not key.startswith(NOT_VARIANTS) and len({json.dumps(flat.get(key), sort_keys=True) for flat in members}) > 1
        ]
    names = []
    for flat in flats:
        details = [f"{_short(key)}={flat.get(key)}" for key in varying[flat["method"]]]
        names.append(flat["method"] + (" (" + ", ".join(details) + ")" if details else ""))
    return names


def _short(key: str) -> str:
    """``storage.options.masked.text_rule.mode`` -> ``text_rule.mode``; ``train.epochs`` -> ``epochs``."""
    parts = key.split(".")
    if parts[:2] == ["storage", "options"]:
        parts = parts[3:]
    elif parts[0] in ("storage", "train", "benchmark", "model", "eval"):
        parts = parts[1:]
        if parts[:1] == ["budget"]:
            parts = parts[1:]
    return ".".join(parts) or key


def _groups(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for name, run in zip(variant_names(runs), runs, strict=True):
        groups[name].append(run)
    return groups


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group runs by :func:`variant_names`; mean and std over seeds.

    :return: one dict per group: ``name``, ``seeds``, and ``<column>`` -> ``(mean, std)`` (std 0 for
        one seed; ``None`` where the figure does not apply).
    """
    groups = _groups(runs)
    rows = []
    for name, members in groups.items():
        row: dict[str, Any] = {"name": name, "seeds": sorted(m["config"]["seed"] for m in members)}
        for key, _ in figure_columns(runs):
            values = [m[key] for m in members if m.get(key) is not None]
            row[key] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0) if values else None
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A markdown table of :func:`aggregate`'s rows, ``mean ± std``.

    :param columns: figure keys to show (default: every figure some row has).
    """
    present = [key for key in rows[0] if key not in ("name", "seeds")] if rows else []
    columns = columns or [key for key in present if any(row.get(key) is not None for row in rows)]
    titles = {**dict(BASE_COLUMNS), **FIGURE_TITLES, "wall_seconds": "wall s"}
    lines = ["| method | seeds | " + " | ".join(titles.get(c, c) for c in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            digits = 2 if value is not None and value[0] < 10 else 1
            cells.append("-" if value is None else f"{value[0]:.{digits}f} ± {value[1]:.{digits}f}")
        lines.append(f"| {row['name']} | {len(row['seeds'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def class_forgetting(class_matrix: list[dict[str, float]]) -> dict[str, float]:
    """Forgetting of each class: its best accuracy before the last step minus its final accuracy (%).

    :param class_matrix: a results file's ``class_accuracy_matrix``: per step, accuracy (%) of each
        class seen by then (keys: class ids as strings).
    :return: class id -> forgetting (points), for the classes seen before the last step (the last
        step's new classes have no earlier accuracy and are left out); ``{}`` for a single step.
    """
    if len(class_matrix) < 2:
        return {}
    final = class_matrix[-1]
    forgetting = {}
    for label in class_matrix[-2]:
        best = max(step[label] for step in class_matrix[:-1] if label in step)
        forgetting[label] = best - final[label]
    return forgetting


def t_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student's ``t`` confidence interval of ``values``: ``(mean, low, high)``.

    :raises ValueError: with fewer than 2 values (no interval).
    """
    from scipy.stats import t as student_t

    if len(values) < 2:
        raise ValueError(f"a confidence interval needs >= 2 values; got {len(values)}")
    mean = statistics.fmean(values)
    half = float(student_t.ppf(0.5 + confidence / 2, len(values) - 1)) * statistics.stdev(values) / len(values) ** 0.5
    return mean, mean - half, mean + half


def paired_differences(
    runs: list[dict[str, Any]], baseline: str, key: str = "final_accuracy"
) -> list[dict[str, Any]]:
    """Per group, the per-seed difference ``group - baseline`` of ``key`` and its 95% interval.

    :param baseline: a group name of :func:`variant_names` (e.g. ``"raw"``).
    :return: one dict per other group with at least 2 seeds shared with the baseline: ``name``,
        ``n`` (paired seeds), ``mean``, ``low``, ``high``, ``beats`` (``low > 0``),
        ``loses`` (``high < 0``).
    :raises ValueError: if no group is named ``baseline``, or paired runs differ in class order.
    """
    groups = _groups(runs)
    if baseline not in groups:
        raise ValueError(f"no runs named {baseline!r}; groups: {sorted(groups)}")
    base = {run["config"]["seed"]: run for run in groups[baseline]}
    rows = []
    for name, members in groups.items():
        if name == baseline:
            continue
        pairs = [(run, base[run["config"]["seed"]]) for run in members if run["config"]["seed"] in base and run.get(key) is not None]
        for run, other in pairs:
            if run.get("class_order") != other.get("class_order"):
                raise ValueError(f"{run.get('_file')} and {other.get('_file')} share a seed but not the class order")
        if len(pairs) < 2:
            continue
        mean, low, high = t_interval([run[key] - other[key] for run, other in pairs])
        rows.append({"name": name, "n": len(pairs), "mean": mean, "low": low, "high": high, "beats": low > 0, "loses": high < 0})
    return rows


def paired_markdown(rows: list[dict[str, Any]], baseline: str, key: str = "final_accuracy") -> str:
    """A markdown table of :func:`paired_differences`' rows."""
    lines = [f"| method | paired seeds | {key} - {baseline} | 95% interval | verdict |", "|---|---|---|---|---|"]
    for row in rows:
        verdict = "beats" if row["beats"] else "below" if row["loses"] else "no difference resolved"
        lines.append(f"| {row['name']} | {row['n']} | {row['mean']:+.1f} | [{row['low']:+.1f}, {row['high']:+.1f}] | {verdict} |")
    return "\n".join(lines)
