"""ceems_exporter: the per-node Prometheus exporter."""
