"""`ceems_tool`: operator helpers (recording rules, updater queries, web config, health checks)."""
