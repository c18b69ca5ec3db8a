"""The program of every process of a study run on several GPUs:
``torchrun --standalone --nproc_per_node N -m avalanche_exmask.study.torchrun_entry RUN_JSON``.

``RUN_JSON`` is a :class:`~avalanche_exmask.study.runs.StudyRun` as JSON (its fields, the results
path as a string). Every process joins the process group (NCCL on ``cuda:LOCAL_RANK``, seeded by
the run's seed), trains the run data-parallel, and rank 0 writes its results file and removes its
checkpoint (:func:`~avalanche_exmask.study.runs.run_in_this_process`).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main(description: str) -> None:
    """Run the study run ``description`` (JSON) on this ``torchrun`` launch's processes."""
    from avalanche_exmask import distributed
    from avalanche_exmask.study.runs import StudyRun, run_in_this_process

    fields = json.loads(description)
    run = StudyRun(**{**fields, "results": Path(fields["results"])})
    distributed.init_distributed(int(run.values.get("seed", 0)), device=str(run.values.get("device", "cpu")))
    try:
        run_in_this_process(run)
    finally:
        distributed.close_distributed()


if __name__ == "__main__":
    main(sys.argv[1])
