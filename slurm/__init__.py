"""submitit launchers for `videored train` / `videored eval` and sweeps (SLURM, local or debug).

A thin wrapper around the training CLI: nothing under `videored/` imports this package.

    python -m slurm.submit train --config C --job-dir DIR [resource flags] [key=value ...]
    python -m slurm.submit eval  --config C --checkpoint P --job-dir DIR [...]
    python -m slurm.submit sweep --grid reinforce.tau=0.5,1.0 model.threshold=0.4,0.5 --config C --job-dir DIR
    python -m slurm.submit collect --job-dir DIR

`slurm/local_cluster.sh up` starts a real one-node cluster on this machine (see docs/slurm.md).
"""
