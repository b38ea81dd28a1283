"""Command-line entry points other than the daemons: `ceems` (demo)."""
