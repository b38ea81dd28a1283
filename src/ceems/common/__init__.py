"""Pieces every command shares: logging, web config (TLS, basic auth)."""
