"""Tables from results files: mean and spread over seeds, one row per (method, variant)."""
from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Optional

__all__ = ["load_results", "aggregate", "markdown_table"]

#: Figures aggregated over seeds (key in the results dict, column title).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("final_accuracy", "final acc %"),
    ("average_incremental_accuracy", "avg inc acc %"),
    ("forgetting", "forgetting %"),
    ("exemplars_per_class", "exemplars/class"),
    ("kept_patch_fraction", "kept patches"),
    ("kept_token_fraction", "kept tokens"),
    ("wall_seconds", "wall s"),
)

#: Config fields that tell variants of one method apart (ablations).
VARIANT_FIELDS = ("background_downsample", "skip_empty_patches", "image_attention", "image_rule", "tau", "keep_ratio", "text_mode", "p_fill", "p_token_mix", "p_swap_text",
                  "samples_per_class", "n_experiences", "jpeg_quality", "adapter")


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


def _variant(run: dict[str, Any], varying: list[str]) -> str:
    config = run["config"]
    label = config["method"]
    if config["method"] == "masking":
        details = [f"{k}={config[k]}" for k in varying if k in config]
    else:
        details = [f"{k}={config[k]}" for k in varying if k in ("samples_per_class", "n_experiences", "adapter", "jpeg_quality")]
    return label + (" (" + ", ".join(details) + ")" if details else "")


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group runs by method and the config fields that vary among them; mean and std over seeds.

    :return: one dict per group: ``name``, ``seeds``, and ``<column>`` -> ``(mean, std)`` (std 0 for
        one seed; ``None`` where the figure does not apply).
    """
    varying = [f for f in VARIANT_FIELDS if len({json.dumps(r["config"].get(f)) for r in runs if r["config"]["method"] == "masking"}) > 1]
    varying += [f for f in ("samples_per_class", "n_experiences") if f not in varying and len({r["config"].get(f) for r in runs}) > 1]
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[_variant(run, varying)].append(run)
    rows = []
    for name, members in groups.items():
        row: dict[str, Any] = {"name": name, "seeds": sorted(m["config"]["seed"] for m in members)}
        for key, _ in COLUMNS:
            values = [m[key] for m in members if m.get(key) is not None]
            row[key] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0) if values else None
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]], columns: Optional[list[str]] = None) -> str:
    """A markdown table of :func:`aggregate`'s rows, ``mean ± std``."""
    columns = columns or [key for key, _ in COLUMNS]
    titles = dict(COLUMNS)
    lines = ["| method | seeds | " + " | ".join(titles[c] for c in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for column in columns:
            value = row[column]
            cells.append("-" if value is None else f"{value[0]:.2f} ± {value[1]:.2f}" if value[0] < 10 else f"{value[0]:.1f} ± {value[1]:.1f}")
        lines.append(f"| {row['name']} | {len(row['seeds'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
