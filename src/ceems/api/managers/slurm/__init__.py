"""The SLURM resource manager: sacct/sacctmgr or slurmrestd."""
