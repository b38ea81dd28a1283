"""fetch_units decodes JSON columns itself: the rows must be what SQLAlchemy's JSON type gives."""

from __future__ import annotations

import sqlalchemy as sa

from ceems.api.store.queries import TimeWindow, UnitFilter, fetch_units, select_units, unit_query
from ceems.api.store.schema import units
from ceems.api.store.writes import StoreWriter
from tests.api.store.factory import CLUSTER, DAY_MS, T0, make_unit, project, rows, user, window

UNITS = [
    window("1", 3600.0, 50.25, 0.125, ended_at_ts=T0 + 7_200_000, state="COMPLETED"),
    window("2", 60.0, 1e-7, 3.0, tags={"note": "é <&> \u2028", "nested": {"b": [1, 2.5]}},
           provenance={"cpu_power": "rapl"}),
    make_unit("3", allocation={"cpus": 2, "huge": 2**70, "ratio": 0.1}, tags={}),
]  # fmt: skip


def store(writer: StoreWriter) -> None:
    writer.commit_update(
        CLUSTER, T0 + DAY_MS, UNITS, [user("alice", "research")], [project("research", "alice")],
        T0 + DAY_MS,
    )  # fmt: skip


def test_every_column_is_as_sqlalchemy_decodes_it(writer: StoreWriter, engine: sa.Engine) -> None:
    store(writer)
    expected = rows(engine, units, "cluster_id", "uuid", "created_at_ts")
    with engine.connect() as conn:
        assert fetch_units(conn, UnitFilter()) == expected


def test_selected_columns_in_any_order(writer: StoreWriter, engine: sa.Engine) -> None:
    store(writer)
    names = ["tags", "uuid", "total_time_seconds", "started_at_ts", "allocation", "state"]
    expected = [
        {name: row[name] for name in names}
        for row in rows(engine, units, "cluster_id", "uuid", "created_at_ts")
    ]
    with engine.connect() as conn:
        assert fetch_units(conn, UnitFilter(members_of=["alice"]), names) == expected
        assert fetch_units(conn, UnitFilter(uuids=["3"]), ["allocation"]) == [
            {"allocation": {"cpus": 2, "huge": 2**70, "ratio": 0.1}}
        ]


def test_a_window_and_no_json_columns(writer: StoreWriter, engine: sa.Engine) -> None:
    store(writer)
    ended = UnitFilter(window=TimeWindow(T0, T0 + DAY_MS))
    with engine.connect() as conn:
        assert fetch_units(conn, ended, ["uuid", "ended_at_ts"]) == [
            {"uuid": "1", "ended_at_ts": T0 + 7_200_000}
        ]


def test_kept_statements_run_with_each_requests_values(
    writer: StoreWriter, engine: sa.Engine
) -> None:
    writer.commit_update(
        CLUSTER, T0 + DAY_MS,
        [make_unit("a1", username="alice", project="research"),
         make_unit("b1", username="bob", project="physics"),
         make_unit("b2", username="bob", project="research")],
        [user("alice", "research"), user("bob", "physics", "research"), user("carol", "physics")],
        [project("research", "alice", "bob"), project("physics", "bob", "carol")], T0 + DAY_MS,
    )  # fmt: skip
    with engine.connect() as conn:
        # Same shape (one member, one project each in one cluster), other values.
        alice = unit_query(conn, UnitFilter(members_of=["alice"]), ["uuid"])
        carol = unit_query(conn, UnitFilter(members_of=["carol"]), ["uuid"])
        assert alice[0] is carol[0] and alice[1] != carol[1]
        mine = [r["uuid"] for r in fetch_units(conn, UnitFilter(members_of=["alice"]), ["uuid"])]
        assert mine == ["a1", "b2"]  # bob's unit in research, not the one in physics
        carols = fetch_units(conn, UnitFilter(members_of=["carol"]), ["uuid"])
        assert [r["uuid"] for r in carols] == ["b1"]
        bobs = [r["uuid"] for r in fetch_units(conn, UnitFilter(users=["bob"]), ["uuid"])]
        assert bobs == ["b1", "b2"]
        theirs = fetch_units(conn, UnitFilter(users=["alice"]), ["uuid"])
        assert [r["uuid"] for r in theirs] == ["a1"]
        # Long lists are built afresh each time (never kept), with the same answers.
        many = UnitFilter(uuids=["b1", *(f"x{i}" for i in range(100))])
        first, second = unit_query(conn, many, ["uuid"])[0], unit_query(conn, many, ["uuid"])[0]
        assert first is not second
        assert fetch_units(conn, many, ["uuid"]) == [{"uuid": "b1"}]
        # select_units: the same statement with its values bound, printable as SQL.
        sql = str(
            select_units(conn, UnitFilter(users=["bob"]), ["uuid"]).compile(
                conn, compile_kwargs={"literal_binds": True}
            )
        )
        assert "'bob'" in sql
        assert [r[0] for r in conn.exec_driver_sql(sql)] == ["b1", "b2"]
