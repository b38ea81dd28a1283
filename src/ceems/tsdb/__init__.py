"""Prometheus-compatible TSDB HTTP API client."""
