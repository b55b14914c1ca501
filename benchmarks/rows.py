"""Count the portal rows that one run wrote, per table.

Two measures:

- ``snapshot``/``diff_snapshots``, on both backends: every row of every table
  before and after, compared by primary key. It counts rows inserted, deleted,
  or updated to a different value. An UPDATE that writes the values a row
  already has is invisible to it.
- ``table_write_counts``, on PostgreSQL: the ``n_tup_ins``, ``n_tup_upd`` and
  ``n_tup_del`` counters of ``pg_stat_user_tables``, which count every row
  written, same values or not.
"""

from __future__ import annotations

import time
import zlib
from typing import Any

import psycopg
import sqlalchemy as sa

from benchmarks.portal import sqlalchemy_url

Snapshot = dict[str, dict[tuple[Any, ...], int]]

_SKIPPED_TABLES = {"alembic_version"}
TRANSACTIONS = "(transactions)"
"""The key of the database's transaction counters in ``table_write_counts``; no table has this name."""
_STATS_WAIT_SECONDS = 15.0


def snapshot(url: str) -> Snapshot:
    """Return ``{table: {primary key: checksum of the row}}`` for every table but Alembic's."""
    engine = sa.create_engine(sqlalchemy_url(url))
    try:
        metadata = sa.MetaData()
        metadata.reflect(engine)
        tables: Snapshot = {}
        with engine.connect() as connection:
            for name, table in metadata.tables.items():
                if name in _SKIPPED_TABLES:
                    continue
                key_columns = list(table.primary_key.columns) or list(table.columns)
                key_positions = [list(table.columns).index(column) for column in key_columns]
                rows = {}
                for row in connection.execute(table.select()):
                    values = tuple(row)
                    key = tuple(values[position] for position in key_positions)
                    rows[key] = zlib.crc32(repr(values).encode())
                tables[name] = rows
        return tables
    finally:
        engine.dispose()


def diff_snapshots(before: Snapshot, after: Snapshot) -> dict[str, dict[str, int]]:
    """Return ``{table: {"inserted", "updated", "deleted"}}`` for the tables where a row changed."""
    changes = {}
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name, {}), after.get(name, {})
        inserted = sum(1 for key in new if key not in old)
        deleted = sum(1 for key in old if key not in new)
        updated = sum(1 for key, checksum in new.items() if key in old and old[key] != checksum)
        if inserted or updated or deleted:
            changes[name] = {"inserted": inserted, "updated": updated, "deleted": deleted}
    return changes


def table_write_counts(url: str) -> dict[str, dict[str, int]]:
    """Return PostgreSQL's cumulative row write counters per table of the database at ``url``.

    The ``TRANSACTIONS`` entry contains the database's committed and rolled back
    transactions. Waits until no other session is connected to the database.
    A backend flushes its statistics when it exits, before it leaves
    ``pg_stat_activity``, so the counters then include every finished run.
    Every read here is one transaction, which the next call counts as one
    commit: ``diff_write_counts`` takes it off.
    """
    with psycopg.connect("postgresql://" + url.split("://", 1)[1]) as connection:
        _wait_for_other_sessions(connection)
        rows = connection.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables"
        ).fetchall()
        transactions = connection.execute(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    counts = {
        name: {"inserted": inserted, "updated": updated, "deleted": deleted}
        for name, inserted, updated, deleted in rows
        if name not in _SKIPPED_TABLES
    }
    committed, rolled_back = transactions or (0, 0)
    counts[TRANSACTIONS] = {"committed": committed, "rolled_back": rolled_back}
    return counts


def diff_write_counts(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]
) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """Return the row writes per table and the transactions between two ``table_write_counts`` results."""
    changes = {}
    for name in sorted(after):
        if name == TRANSACTIONS:
            continue
        old = before.get(name, {})
        delta = {kind: after[name][kind] - old.get(kind, 0) for kind in ("inserted", "updated", "deleted")}
        if any(delta.values()):
            changes[name] = delta
    old_transactions = before.get(TRANSACTIONS, {})
    transactions = {kind: count - old_transactions.get(kind, 0) for kind, count in after[TRANSACTIONS].items()}
    # The read that produced ``before`` committed once after taking its numbers.
    transactions["committed"] -= 1
    return changes, transactions


def total_rows(changes: dict[str, dict[str, int]], *, excluding: frozenset[str] = frozenset()) -> int:
    return sum(sum(counts.values()) for name, counts in changes.items() if name not in excluding)


def _wait_for_other_sessions(connection: psycopg.Connection[Any]) -> None:
    deadline = time.monotonic() + _STATS_WAIT_SECONDS
    while True:
        # Inside a transaction, statistics views keep their first snapshot unless it is cleared.
        connection.execute("SELECT pg_stat_clear_snapshot()")
        others = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
        if not others or others[0] == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{others[0]} other session(s) still connected to the benchmark database after "
                f"{_STATS_WAIT_SECONDS:.0f}s, so its write counters may be incomplete"
            )
        time.sleep(0.1)
