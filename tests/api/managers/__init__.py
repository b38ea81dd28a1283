"""Tests of the resource managers."""
