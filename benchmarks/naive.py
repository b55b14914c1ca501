"""A naive reconciliation job, written the way such a job usually is, as the benchmark's slow reference.

For each managed network it GETs the member ID list, then GETs each member,
looks its membership up in the portal, POSTs a change where the two disagree
and writes the member to a cache table, committing after every row. Then it
creates each active membership's member that the controller lacks. One pooled
``httpx.Client`` sends one request at a time. Run by the harness in a child
process::

    BENCHMARK_CONTROLLER_TOKEN=... python -m benchmarks.naive CONTROLLER_URL DATABASE_URL

It prints one JSON object with its counts and the seconds it took.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import sqlalchemy as sa

from benchmarks.floor import TOKEN_VARIABLE
from benchmarks.portal import sqlalchemy_url

CACHE_TABLE = "bench_naive_cache"

_cache_metadata = sa.MetaData()
cache_table = sa.Table(
    CACHE_TABLE,
    _cache_metadata,
    sa.Column("network_id", sa.String(16), primary_key=True),
    sa.Column("node_id", sa.String(10), primary_key=True),
    sa.Column("authorized", sa.Boolean, nullable=False),
    sa.Column("revision", sa.BigInteger, nullable=False),
    sa.Column("synced_at", sa.String(40), nullable=False),
)


def create_cache_table(database_url: str) -> None:
    engine = sa.create_engine(sqlalchemy_url(database_url))
    try:
        _cache_metadata.create_all(engine)
    finally:
        engine.dispose()


@dataclass
class PortalTables:
    networks: sa.Table
    memberships: sa.Table
    activations: sa.Table

    @classmethod
    def reflect(cls, engine: sa.Engine) -> PortalTables:
        metadata = sa.MetaData()
        return cls(*(sa.Table(name, metadata, autoload_with=engine) for name in ("networks", "memberships", "activations")))


class NaiveJob:
    def __init__(self, client: httpx.Client, connection: sa.Connection, tables: PortalTables) -> None:
        self.client = client
        self.connection = connection
        self.tables = tables
        self.now = datetime.now(UTC)
        self.counts: Counter[str] = Counter()

    def run(self) -> None:
        networks = self.tables.networks
        statement = sa.select(networks.c.id).where(networks.c.removed_at.is_(None)).order_by(networks.c.id)
        network_ids = list(self.connection.scalars(statement))
        self.connection.rollback()
        for network_id in network_ids:
            self.reconcile_network(network_id)
            self.counts["networks"] += 1

    def reconcile_network(self, network_id: str) -> None:
        base = f"/controller/network/{network_id}/member"
        node_ids = list(self._get(base))
        for node_id in node_ids:
            member = self._get(f"{base}/{node_id}")
            self.counts["members_read"] += 1
            wanted = self.portal_wants_access(network_id, node_id.lower())
            if wanted is not None and wanted != bool(member.get("authorized")):
                member = self._post(f"{base}/{node_id}", {"authorized": wanted})
                self.counts["authorized" if wanted else "deauthorized"] += 1
            self.write_cache_row(network_id, node_id.lower(), member)

        on_controller = {node_id.lower() for node_id in node_ids}
        for node_id in self.active_node_ids(network_id):
            if node_id not in on_controller and self.portal_wants_access(network_id, node_id):
                member = self._post(f"{base}/{node_id}", {"authorized": True})
                self.counts["created"] += 1
                self.write_cache_row(network_id, node_id, member)

    def portal_wants_access(self, network_id: str, node_id: str) -> bool | None:
        """Return whether the portal grants access now, or None when it has no membership for the member."""
        memberships, activations = self.tables.memberships, self.tables.activations
        membership = self.connection.execute(
            sa.select(memberships.c.id, memberships.c.state, memberships.c.removed_at).where(
                memberships.c.network_id == network_id, memberships.c.node_id == node_id
            )
        ).first()
        if membership is None:
            return None
        if membership.removed_at is not None or membership.state != "active":
            return False
        windows = self.connection.execute(
            sa.select(activations.c.starts_at, activations.c.expires_at, activations.c.ended_at).where(
                activations.c.membership_id == membership.id, activations.c.removed_at.is_(None)
            )
        ).all()
        if not windows:
            return True
        return any(
            ended_at is None and _utc(starts_at) <= self.now < _utc(expires_at)
            for starts_at, expires_at, ended_at in windows
        )

    def active_node_ids(self, network_id: str) -> list[str]:
        memberships = self.tables.memberships
        statement = sa.select(memberships.c.node_id).where(
            memberships.c.network_id == network_id,
            memberships.c.state == "active",
            memberships.c.removed_at.is_(None),
        )
        return [node_id.lower() for node_id in self.connection.scalars(statement)]

    def write_cache_row(self, network_id: str, node_id: str, member: dict[str, Any]) -> None:
        """Upsert the member into the cache table and commit, one row per transaction."""
        values = {
            "authorized": bool(member.get("authorized")),
            "revision": int(member.get("revision", 0)),
            "synced_at": self.now.isoformat(),
        }
        key = (cache_table.c.network_id == network_id) & (cache_table.c.node_id == node_id)
        result = self.connection.execute(sa.update(cache_table).where(key).values(**values))
        if result.rowcount == 0:
            self.connection.execute(sa.insert(cache_table).values(network_id=network_id, node_id=node_id, **values))
        self.connection.commit()
        self.counts["rows_written"] += 1

    def _get(self, path: str) -> Any:
        response = self.client.get(path)
        response.raise_for_status()
        return response.json()

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        response = self.client.post(path, json=body)
        response.raise_for_status()
        return response.json()


def _utc(moment: datetime) -> datetime:
    # SQLite hands back naive UTC times.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.naive", description=__doc__.splitlines()[0])
    parser.add_argument("controller_url", help="controller base URL, such as http://127.0.0.1:9993")
    parser.add_argument("database_url", help="portal database URL, sqlite:///PATH or postgresql://...")
    arguments = parser.parse_args(argv)
    token = os.environ.get(TOKEN_VARIABLE)
    if not token:
        parser.error(f"missing controller token: set {TOKEN_VARIABLE}")

    start = time.perf_counter()
    engine = sa.create_engine(sqlalchemy_url(arguments.database_url))
    try:
        tables = PortalTables.reflect(engine)
        headers = {"X-ZT1-Auth": token}
        with (
            httpx.Client(base_url=arguments.controller_url, headers=headers, timeout=30) as client,
            engine.connect() as connection,
        ):
            job = NaiveJob(client, connection, tables)
            job.run()
    finally:
        engine.dispose()
    report = {**job.counts, "seconds": round(time.perf_counter() - start, 3)}
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
