"""Tests of the compute-unit store on SQLite and PostgreSQL."""
