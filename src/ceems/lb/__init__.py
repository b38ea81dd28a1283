"""ceems_lb: PromQL-aware access control and load balancing in front of TSDBs."""
