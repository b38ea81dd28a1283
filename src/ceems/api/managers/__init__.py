"""Resource managers: where compute units, users and projects come from."""
