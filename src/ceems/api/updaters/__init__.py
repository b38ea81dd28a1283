"""Updaters: enrich units with aggregate metrics (the TSDB updater)."""
