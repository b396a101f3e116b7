"""The callable that submitit pickles and runs once per task: one `videored` CLI invocation.

Used by the SLURM launcher (`python -m slurm.submit`) and by `videored quickstart` (submitit's
local executor): one job class, one code path. Training code never imports this module.

Every task (one per GPU, or per CPU process) exports the torch.distributed variables of its
job (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and calls the same
`videored.cli.main` that `videored train|eval` and torchrun use. When SLURM preempts the job or
its time runs out, submitit calls `checkpoint()` on rank 0 and requeues what it returns.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import submitit


def with_resume_auto(argv: list[str]) -> list[str]:
    """`argv` with `--resume auto` in place of any `--resume X` / `--resume=X` it had."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--resume":
            skip = True  # drop the flag and its value
        elif not arg.startswith("--resume="):
            out.append(arg)
    return out + ["--resume", "auto"]


class VideoredJob:
    """Run `videored <argv>` inside a submitit job (SLURM, local or debug).

    argv: the full CLI argument list, e.g. ["train", "--config", "c.yaml", "--out", "DIR"].
    cwd: working directory for relative paths in argv (default: where the job was built).
    threads: OMP/torch threads per task when the scheduler does not say (SLURM_CPUS_PER_TASK).
    """

    def __init__(self, argv: list[str], cwd: Optional[str] = None, threads: Optional[int] = None) -> None:
        if not argv or argv[0] not in ("train", "eval"):
            raise ValueError(f"VideoredJob runs `videored train|eval`, got argv={argv!r}")
        self.argv = list(argv)
        self.cwd = cwd or os.getcwd()
        self.threads = threads

    @property
    def command(self) -> str:
        return self.argv[0]

    def __repr__(self) -> str:
        return f"VideoredJob({' '.join(self.argv)!r})"

    def __call__(self) -> int:
        os.chdir(self.cwd)
        saved = dict(os.environ)  # restored at the end: the debug executor runs in our own process
        try:
            self._export_environment()
            from videored.cli import main  # imported here: unpickling the job stays cheap

            code = main(list(self.argv))
        finally:
            os.environ.clear()
            os.environ.update(saved)
        if code != 0:
            raise RuntimeError(f"videored {' '.join(self.argv)} exited with status {code}")
        return code

    def _export_environment(self) -> None:
        # torchrun names from submitit's view of the job. The engine picks cuda:LOCAL_RANK itself,
        # so CUDA_VISIBLE_DEVICES is left as SLURM set it (all GPUs of the node for this job).
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False,
                                                              overwrite=True)
        threads = os.environ.get("SLURM_CPUS_PER_TASK") or (str(self.threads) if self.threads else None)
        if threads and "OMP_NUM_THREADS" not in os.environ:
            os.environ["OMP_NUM_THREADS"] = threads  # read by torch when it first spins its pool

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on rank 0 at preemption or timeout; the returned submission is
        requeued in the same job dir. Training resumes from its newest checkpoint there
        (`--resume auto`); evaluation, which keeps no state, simply runs again."""
        argv = with_resume_auto(self.argv) if self.command == "train" else self.argv
        return submitit.helpers.DelayedSubmission(VideoredJob(argv, self.cwd, self.threads), *args, **kwargs)


def run_dir_of(argv: list[str]) -> Optional[Path]:
    """The `--out DIR` of a videored argv (None when absent)."""
    for i, arg in enumerate(argv):
        if arg == "--out" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--out="):
            return Path(arg.split("=", 1)[1])
    return None


def run_local_job(argv: list[str], folder: str | Path, cluster: str = "local",
                  poll_s: float = 1.0) -> int:
    """Run `videored <argv>` as a submitit job on this machine and wait for it.

    cluster "local" runs it in a child process whose stdout/stderr (progress bars included)
    are streamed here while it runs and kept under `folder`; "debug" runs it in this process.
    Raises the job's error when it fails.
    """
    import sys
    import time

    executor = submitit.AutoExecutor(folder=Path(folder), cluster=cluster)
    executor.update_parameters(timeout_min=24 * 60, tasks_per_node=1, nodes=1)
    job = executor.submit(VideoredJob(argv))
    offsets = {"stdout": 0, "stderr": 0}

    def pump() -> None:
        for name, sink in (("stdout", sys.stdout), ("stderr", sys.stderr)):
            path = getattr(job.paths, name)
            if path.exists():
                with open(path, "rb") as fh:
                    fh.seek(offsets[name])
                    chunk = fh.read()
                offsets[name] += len(chunk)
                sink.write(chunk.decode("utf-8", "replace"))
                sink.flush()

    while not job.done():
        pump()
        time.sleep(poll_s)
    pump()
    return job.result()
