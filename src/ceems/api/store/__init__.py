"""The compute-unit store: schema, migrations, writes and queries (SQLite or PostgreSQL)."""
