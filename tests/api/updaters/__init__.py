"""Tests of the API server's updaters."""
