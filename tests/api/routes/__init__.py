"""Tests of the HTTP API: routes, access control, rendering."""
