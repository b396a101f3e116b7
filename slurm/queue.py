"""What SLURM says about a job, and waiting for submitit jobs without `sacct`.

submitit learns that a job ended from its result file or from `sacct`. Without accounting (the
one-node cluster, some small sites) a job that dies without writing its result file (cancelled,
killed by the OOM killer, node failure) would be waited for forever; `wait_for_jobs` asks
`squeue --states=all`, which slurmctld answers for MinJobAge seconds after the end, instead.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from typing import Optional, Sequence

# Job states after which no result file will come (squeue's long names).
TERMINAL_STATES = {"completed", "cancelled", "failed", "timeout", "node_fail", "preempted",
                   "boot_fail", "deadline", "out_of_memory", "special_exit", "revoked"}


def queue_state(job_id: str) -> Optional[str]:
    """The job's state in lower case ("pending", "running", "cancelled", ...), None when SLURM
    does not know the job (never existed, or purged MinJobAge after its end) or is unreachable."""
    if not shutil.which("squeue"):
        return None
    try:
        res = subprocess.run(["squeue", "-h", "--states=all", "-j", str(job_id), "-o", "%T"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = res.stdout.split()
    return lines[0].lower() if res.returncode == 0 and lines else None


def wait_for_jobs(jobs: Sequence, slurm: bool, poll_s: float = 2.0, grace_s: float = 30.0) -> int:
    """Block until every submitit job has ended; returns the number that failed (errors printed).

    slurm: also give up on a job that SLURM reports ended (or no longer knows) while its result
    file has not appeared within `grace_s` (time for a shared file system to show it).
    """
    failed = 0
    lost_since: dict[str, float] = {}
    waiting = list(jobs)
    while slurm and waiting:
        for job in list(waiting):
            if job.paths.result_pickle.exists():
                waiting.remove(job)
                continue
            state = queue_state(job.job_id)
            if state is not None and state not in TERMINAL_STATES:
                lost_since.pop(job.job_id, None)
                continue
            first = lost_since.setdefault(job.job_id, time.monotonic())
            if time.monotonic() - first > grace_s:
                waiting.remove(job)
                jobs = [j for j in jobs if j is not job]
                failed += 1
                print(f"job {job.job_id} ended ({state or 'unknown to squeue'}) without a result; "
                      f"see {job.paths.stdout} and {job.paths.stderr}", file=sys.stderr)
        if waiting:
            time.sleep(poll_s)
    for job in jobs:  # every result file is there (or the job runs locally): read the outcome
        try:
            job.results()
        except Exception as err:  # submitit re-raises the job's error with its traceback
            failed += 1
            print(f"job {job.job_id} failed: {err}", file=sys.stderr)
    return failed
