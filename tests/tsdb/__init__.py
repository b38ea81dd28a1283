"""Tests of the TSDB client against a real Prometheus."""
