"""The portal databases of a benchmark case, on SQLite or PostgreSQL, and how their data is loaded.

Each case builds one pristine portal, then gives every measured writer its own
copy of it: a file copy on SQLite, ``CREATE DATABASE ... TEMPLATE`` on
PostgreSQL. PostgreSQL databases are named ``ztctl_bench_*`` and dropped when
the case ends.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from benchmarks.dataset import Dataset
from benchmarks.process import python_module, run_checked
from ztctl.portal.models import Activation, Membership, Network

INSERT_CHUNK_ROWS = 5000
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


class SqliteStore:
    """Portal databases as files in one directory."""

    backend = "sqlite"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def url(self, name: str) -> str:
        return f"sqlite:///{self.directory / f'{name}.db'}"

    def create(self, name: str) -> str:
        """Return the URL of a database that ``ztctl db upgrade`` will create."""
        return self.url(name)

    def clone(self, source: str, name: str) -> str:
        shutil.copyfile(self.directory / f"{source}.db", self.directory / f"{name}.db")
        return self.url(name)

    def close(self) -> None:
        """Nothing to do: the caller removes the directory."""


class PostgresStore:
    """Portal databases on a PostgreSQL server, all named ``<prefix>_<name>`` and dropped by ``close``."""

    backend = "postgresql"

    def __init__(self, admin_url: str, prefix: str) -> None:
        self.admin_url = admin_url
        self.prefix = prefix
        self._created: list[str] = []

    def url(self, name: str) -> str:
        return make_url(self.admin_url).set(database=f"{self.prefix}_{name}").render_as_string(hide_password=False)

    def create(self, name: str) -> str:
        self._admin(f'CREATE DATABASE "{self.prefix}_{name}"')
        self._created.append(name)
        return self.url(name)

    def clone(self, source: str, name: str) -> str:
        self._admin(f'CREATE DATABASE "{self.prefix}_{name}" TEMPLATE "{self.prefix}_{source}"')
        self._created.append(name)
        return self.url(name)

    def close(self) -> None:
        while self._created:
            name = self._created.pop()
            self._admin(f'DROP DATABASE IF EXISTS "{self.prefix}_{name}" WITH (FORCE)')

    def _admin(self, statement: str) -> None:
        with psycopg.connect(_libpq_url(self.admin_url), autocommit=True) as connection:
            connection.execute(statement)


def sqlalchemy_url(url: str) -> str:
    """Return a portal URL as SQLAlchemy takes it, with the psycopg 3 driver for PostgreSQL."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def _libpq_url(url: str) -> str:
    return "postgresql://" + url.split("://", 1)[1]


# Loading ------------------------------------------------------------------------


def upgrade_schema(url: str, env: Mapping[str, str]) -> None:
    run_checked(python_module("ztctl", "db", "upgrade"), env={**env, "ZTCTL_DATABASE_URL": url})


def load_portal_file(url: str, dataset: Dataset, path: Path, env: Mapping[str, str]) -> None:
    """Write the data set as a JSON portal file and load it with ``ztctl portal load``."""
    path.write_text(json.dumps(portal_document(dataset)), encoding="utf-8")
    run_checked(python_module("ztctl", "portal", "load", str(path)), env={**env, "ZTCTL_DATABASE_URL": url})


def portal_document(dataset: Dataset) -> dict[str, Any]:
    start, expires = (utc_iso(moment) for moment in dataset.activation_window())
    networks = []
    for network in dataset.networks:
        memberships = []
        for member in network.members:
            entry: dict[str, Any] = {
                "node": member.node_id,
                "owner": f"user-{member.index}",
                "name": f"device-{member.index}",
                "state": member.portal_state,
            }
            if member.has_activation:
                entry["activations"] = [{"start": start, "expires": expires}]
            memberships.append(entry)
        networks.append({"id": network.network_id, "name": network.name, "memberships": memberships})
    return {"networks": networks}


def insert_portal_rows(url: str, dataset: Dataset) -> None:
    """Insert the data set's networks, memberships and activations with bulk INSERTs in one transaction.

    The rows match what ``ztctl portal load`` writes for the same data: every
    time is the load time, so no membership is old enough to be purged.
    """
    now = dataset.generated_at
    start, expires = dataset.activation_window()
    networks, memberships, activations = [], [], []
    for network in dataset.networks:
        networks.append({"id": network.network_id, "name": network.name, "created_at": now, "updated_at": now})
        for member in network.members:
            membership_id = member.index + 1
            memberships.append({
                "id": membership_id, "network_id": network.network_id, "node_id": member.node_id,
                "owner": f"user-{member.index}", "name": f"device-{member.index}", "state": member.portal_state,
                "state_changed_at": now, "created_at": now, "updated_at": now,
            })
            if member.has_activation:
                activations.append({
                    "id": len(activations) + 1, "membership_id": membership_id,
                    "starts_at": start, "expires_at": expires, "created_at": now,
                })

    engine = sa.create_engine(sqlalchemy_url(url))
    try:
        with engine.begin() as connection:
            for table, rows in ((Network.__table__, networks), (Membership.__table__, memberships),
                                (Activation.__table__, activations)):
                for first in range(0, len(rows), INSERT_CHUNK_ROWS):
                    connection.execute(table.insert(), rows[first:first + INSERT_CHUNK_ROWS])
            if engine.dialect.name == "postgresql":
                # Explicit IDs leave the SERIAL sequences behind; later inserts by ztctl need them moved on.
                for table in ("memberships", "activations"):
                    connection.exec_driver_sql(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"GREATEST((SELECT max(id) FROM {table}), 1))"
                    )
    finally:
        engine.dispose()


def analyze(url: str) -> None:
    """Refresh PostgreSQL's planner statistics after a load, as autovacuum would on a live portal."""
    if not url.startswith("postgresql"):
        return
    with psycopg.connect(_libpq_url(url), autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")


def ztctl_env(config_path: Path) -> dict[str, str]:
    """Return this process's environment without ``ZTCTL_*`` variables, pointed at ``config_path``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("ZTCTL_")}
    env["ZTCTL_CONFIG"] = str(config_path)
    return env


def write_ztctl_config(path: Path) -> None:
    """Write the config the benchmark runs with: the defaults, but a run time limit that cannot cut a run short.

    The default limit of 5 minutes would stop a slow run midway and hide how
    long it really takes.
    """
    path.write_text("run:\n  time_limit: 2h\n", encoding="utf-8")


def utc_iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
