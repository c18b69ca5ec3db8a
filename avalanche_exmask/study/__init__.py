"""Studies: many runs (method x seed x config) executed by a launcher, on one machine or a cluster.

* :mod:`~avalanche_exmask.study.runs`: one run of a study (:class:`StudyRun`) and how a worker
  executes a job of runs (skipping finished ones, resuming checkpoints, one log per run, ``torchrun``
  for a run on several GPUs);
* :mod:`~avalanche_exmask.study.torchrun_entry`: the program every process of such a ``torchrun`` runs;
* :mod:`~avalanche_exmask.study.launcher`: the launcher options, the interface every launcher
  implements and the loop that follows submitted jobs to the study's report;
* :mod:`~avalanche_exmask.study.progress`: the study-level progress line;
* :mod:`~avalanche_exmask.study.local_launcher`, :mod:`~avalanche_exmask.study.submitit_launcher`,
  :mod:`~avalanche_exmask.study.ray_launcher`: the launchers (a local process pool, SLURM job
  arrays through submitit, Ray tasks).

``benchmarks/run_study.py`` reads a study file, plans and validates its runs and hands them to a
launcher; every launcher gives the same results files in the same folder layout.
"""
