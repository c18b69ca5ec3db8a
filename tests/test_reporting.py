"""Results files -> tables and paired differences."""
from __future__ import annotations

import json

import pytest

from avalanche_exmask.reporting import (
    aggregate,
    class_forgetting,
    load_results,
    markdown_table,
    paired_differences,
    t_interval,
)


def _run(method: str, seed: int, final: float, text_mode: str = "both", order=(0, 1)) -> dict:
    options = {"masked": {"text_rule": {"mode": text_mode}}} if method == "masking" else {method: {}}
    return {
        "config": {"method": method, "seed": seed, "benchmark": {"name": "synthetic"},
                   "storage": {"budget": {"samples_per_class": 5}, "options": options}},
        "class_order": list(order),
        "final_accuracy": final, "average_incremental_accuracy": final + 10, "forgetting": 5.0,
        "exemplars_per_class": 14.0 if method == "masking" else 5.0,
        "figures": ["exemplars_per_class"], "wall_seconds": 1.0,
    }


def test_aggregate_means_and_std_over_seeds_and_separates_variants(tmp_path):
    runs = [_run("raw", 0, 50.0), _run("raw", 1, 54.0),
            _run("masking", 0, 60.0), _run("masking", 1, 62.0), _run("masking", 0, 58.0, text_mode="none")]
    for i, run in enumerate(runs):
        (tmp_path / f"run{i}.json").write_text(json.dumps(run))
    rows = {row["name"]: row for row in aggregate(load_results([tmp_path]))}
    assert set(rows) == {"raw", "masking (text_rule.mode=both)", "masking (text_rule.mode=none)"}
    assert rows["raw"]["final_accuracy"] == pytest.approx((52.0, 2 ** 0.5 * 2))
    assert rows["masking (text_rule.mode=both)"]["seeds"] == [0, 1]
    assert rows["masking (text_rule.mode=none)"]["final_accuracy"] == (58.0, 0.0)
    table = markdown_table(list(rows.values()))
    assert "| raw | 2 | 52.0 ± 2.8 |" in table and "exemplars/class" in table
    assert table.count("\n") == 4  # header, rule, three rows


def test_flat_configs_of_earlier_versions_name_variants_the_same_way():
    flat = [{"config": {"method": "masking", "seed": s, "text_mode": mode}, "final_accuracy": 1.0}
            for s, mode in ((0, "both"), (0, "none"))]
    rows = aggregate(flat)
    assert {row["name"] for row in rows} == {"masking (text_rule.mode=both)", "masking (text_rule.mode=none)"}


def test_paired_differences_pair_by_seed_with_t_intervals():
    runs = [_run("raw", s, f) for s, f in ((0, 50.0), (1, 54.0), (2, 52.0))]
    runs += [_run("masking", s, f) for s, f in ((0, 53.0), (1, 58.0), (2, 54.0))]  # +3, +4, +2
    [row] = paired_differences(runs, "raw")
    assert row["n"] == 3 and row["mean"] == pytest.approx(3.0)
    # t_{0.975, 2} = 4.303, s = 1, half width 4.303 / sqrt(3)
    assert row["low"] == pytest.approx(3.0 - 4.3027 / 3 ** 0.5, abs=1e-3)
    assert row["beats"] is True and row["loses"] is False  # [+0.52, +5.48]
    tight = [_run("raw", s, 50.0 + s) for s in range(5)] + [_run("masking", s, 53.0 + s + 0.1 * (s % 2)) for s in range(5)]
    [row] = paired_differences(tight, "raw")
    assert row["beats"] and row["low"] > 2.5
    with pytest.raises(ValueError, match="no runs named 'cim'"):
        paired_differences(runs, "cim")
    with pytest.raises(ValueError, match="share a seed but not the class order"):
        paired_differences(
            [_run("raw", 0, 1.0), _run("raw", 1, 1.0), _run("masking", 0, 2.0, order=(1, 0)), _run("masking", 1, 2.0)], "raw"
        )
    with pytest.raises(ValueError, match=">= 2 values"):
        t_interval([1.0])


def test_load_results_rejects_other_json(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="x.json is not a results file"):
        load_results([tmp_path])


def test_class_forgetting_is_best_earlier_minus_final_for_old_classes_only():
    matrix = [{"3": 80.0, "7": 60.0}, {"3": 90.0, "7": 40.0, "1": 70.0}, {"3": 50.0, "7": 45.0, "1": 75.0, "4": 99.0}]
    assert class_forgetting(matrix) == pytest.approx({"3": 40.0, "7": 15.0, "1": -5.0})
    assert class_forgetting(matrix[:1]) == {}


def test_a_field_missing_from_an_older_results_file_counts_as_its_default():
    from avalanche_exmask.config import RunConfig
    from avalanche_exmask.reporting import variant_names

    def run(jpeg_options):
        config = RunConfig(method="mrdc").to_dict()
        config["storage"]["options"] = {"jpeg": jpeg_options}
        del config["train"]["replay_rate"]  # written before the field existed
        return {"config": config}

    new = {"config": RunConfig(method="mrdc").to_dict()}
    new["config"]["storage"]["options"] = {"jpeg": {"quality": 50, "chroma_subsampling": "4:2:0"}}
    assert variant_names([run({"quality": 50}), new]) == ["mrdc", "mrdc"]
    names = variant_names([run({"quality": 50}), run({"quality": 97, "chroma_subsampling": "4:4:4"})])
    assert names == ["mrdc (chroma_subsampling=4:2:0, quality=50)", "mrdc (chroma_subsampling=4:4:4, quality=97)"]
