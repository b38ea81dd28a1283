"""Units record where their energy and emission figures come from (DESIGN §5: provenance)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.schema import CreateColumn

# Rows stored before this version get an empty map: SQLite cannot add a NOT NULL column
# without a default, and PostgreSQL could not either once units exist.
_provenance = sa.Column(
    "provenance",
    sa.JSON().with_variant(JSONB(), "postgresql"),
    nullable=False,
    server_default=sa.text("'{}'"),
)
sa.Table("units", sa.MetaData(), _provenance)


def upgrade(conn: sa.Connection) -> None:
    """Add units.provenance."""
    # Core has no ALTER TABLE construct; CreateColumn renders the column as each dialect does.
    column = CreateColumn(_provenance).compile(dialect=conn.dialect)
    conn.exec_driver_sql(f"ALTER TABLE units ADD COLUMN {column}")


def downgrade(conn: sa.Connection) -> None:
    """Drop units.provenance (SQLite 3.35 or later)."""
    conn.exec_driver_sql("ALTER TABLE units DROP COLUMN provenance")
