"""Results files -> tables."""
from __future__ import annotations

import json

import pytest

from avalanche_exmask.reporting import aggregate, load_results, markdown_table


def _run(method: str, seed: int, final: float, **config) -> dict:
    return {
        "config": {"method": method, "seed": seed, "samples_per_class": 5, "n_experiences": 5, **config},
        "final_accuracy": final, "average_incremental_accuracy": final + 10, "forgetting": 5.0,
        "exemplars_per_class": 14.0 if method == "masking" else 5.0, "kept_patch_fraction": None,
        "kept_token_fraction": None, "wall_seconds": 1.0,
    }


def test_aggregate_means_and_std_over_seeds_and_separates_variants(tmp_path):
    runs = [_run("raw", 0, 50.0), _run("raw", 1, 54.0),
            _run("masking", 0, 60.0, text_mode="both"), _run("masking", 1, 62.0, text_mode="both"),
            _run("masking", 0, 58.0, text_mode="none")]
    for i, run in enumerate(runs):
        (tmp_path / f"run{i}.json").write_text(json.dumps(run))
    rows = {row["name"]: row for row in aggregate(load_results([tmp_path]))}
    assert set(rows) == {"raw", "masking (text_mode=both)", "masking (text_mode=none)"}
    assert rows["raw"]["final_accuracy"] == pytest.approx((52.0, 2 ** 0.5 * 2))
    assert rows["masking (text_mode=both)"]["seeds"] == [0, 1]
    assert rows["masking (text_mode=none)"]["final_accuracy"] == (58.0, 0.0)
    table = markdown_table(list(rows.values()))
    assert "| raw | 2 | 52.0 ± 2.8 |" in table
    assert table.count("\n") == 4  # header, rule, three rows


def test_load_results_rejects_other_json(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="x.json is not a results file"):
        load_results([tmp_path])
