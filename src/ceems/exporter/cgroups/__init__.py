"""Compute units from cgroups: discovery per resource manager and resource accounting."""
