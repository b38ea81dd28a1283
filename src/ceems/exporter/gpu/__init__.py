"""GPU discovery and the mapping of compute units (jobs, VMs, pods) to the GPUs they hold."""
