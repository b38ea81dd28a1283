"""Tests of the emission-factor providers."""
