"""Helpers for end-to-end tests: a portal, an emulated controller and the CLI between them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from typer.testing import CliRunner

from ztctl.cli.app import app
from ztctl.controller.emulator import CentralEmulator, ControllerEmulator

ADDRESS = "3233204505"
ENGINEERING = f"{ADDRESS}122666"
LAB = f"{ADDRESS}519ec1"
UNMANAGED = f"{ADDRESS}7ef094"
TOKEN = "emulator-test-token"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def drift_portal(now: datetime) -> str:
    """A portal that disagrees with ``seed_drift_controller`` in every way the job repairs."""
    return f"""\
networks:
  - id: "{ENGINEERING}"
    name: engineering
    memberships:
      - node: a1b2c3d4e5
        owner: alice
        name: alice-laptop
        state: active
        activations:
          - start: {iso(now - timedelta(hours=2))}
            expires: {iso(now + timedelta(hours=6))}
      - node: b2c3d4e5f6
        owner: bob
        state: active
        activations:
          - start: {iso(now - timedelta(hours=9))}
            expires: {iso(now - timedelta(hours=1))}
      - node: c3d4e5f6a7
        owner: carol
        state: active
      - node: d4e5f6a7b8
        owner: dave
        name: dave-tablet
        state: active
      - node: e5f6a7b8c9
        owner: erin
        state: inactive
      - node: b41d9e0001
        name: site-router
        state: inactive
      - node: abcdef0123
        owner: frank
        state: active
  - id: "{LAB}"
    name: lab
    memberships:
      - node: 1a2b3c4d5e
        state: inactive
"""


# Expected authorization on the engineering network once the job has run.
EXPECTED_AFTER = {
    "a1b2c3d4e5": True,
    "b2c3d4e5f6": False,
    "c3d4e5f6a7": True,
    "d4e5f6a7b8": True,
    "e5f6a7b8c9": False,
    "b41d9e0001": True,
    "abcdef0123": True,
    "0badc0ffee": True,
    "0000dead01": False,
}


def is_central(emulator: object) -> bool:
    return isinstance(emulator, CentralEmulator)


def member_path(emulator: object, network_id: str, node_id: str) -> str:
    """The path the emulator serves a member at, as its request log shows it."""
    if is_central(emulator):
        return emulator.member_path(network_id, node_id)  # type: ignore[attr-defined]
    return f"/controller/network/{network_id}/member/{node_id}"


def authorized(record: dict) -> bool:
    """Read ``authorized`` from a member object of either backend (Central nests it in ``config``)."""
    return bool(record.get("config", record)["authorized"])


def seed_drift_controller(emulator: ControllerEmulator) -> None:
    emulator.create_network(ENGINEERING, name="engineering", private=True)
    emulator.create_network(LAB, name="lab", private=False)
    emulator.create_network(UNMANAGED, name="unmanaged", private=True)
    emulator.put_member(ENGINEERING, "a1b2c3d4e5", authorized=True)
    emulator.put_member(ENGINEERING, "b2c3d4e5f6", authorized=True)
    emulator.put_member(ENGINEERING, "c3d4e5f6a7", authorized=False)
    emulator.put_member(ENGINEERING, "e5f6a7b8c9", authorized=True)
    emulator.put_member(ENGINEERING, "b41d9e0001", authorized=True, active_bridge=True)
    # zerotier-one keeps an ID as typed in the URL: this one is listed in upper case.
    emulator.put_member(ENGINEERING, "abcdef0123" if is_central(emulator) else "ABCDEF0123", authorized=True)
    emulator.put_member(ENGINEERING, "0badc0ffee", authorized=True)
    emulator.simulate_join(ENGINEERING, "0000dead01")
    emulator.simulate_join(LAB, "1a2b3c4d5e")
    emulator.put_member(UNMANAGED, "9999999999", authorized=True)
    emulator.put_member(UNMANAGED, "8888888888", authorized=False)


def member_states(emulator: object, network_id: str) -> dict[str, tuple[bool, int]]:
    """Each member's authorization and revision: what a write would change, without volatile fields."""
    return {
        node.lower(): (authorized(record), record.get("config", record)["revision"])
        for node, record in emulator.members(network_id).items()  # type: ignore[attr-defined]
    }


def authorization(emulator: ControllerEmulator, network_id: str) -> dict[str, bool]:
    return {node.lower(): authorized(record) for node, record in emulator.members(network_id).items()}


def writes(emulator: ControllerEmulator) -> list[str]:
    return [f"{r.method} {r.path}" for r in emulator.requests if r.method != "GET"]


@dataclass
class Workspace:
    """A config file pointing at one portal database and one emulator, and a CLI runner using it."""

    root: Path
    database_url: str
    emulator: ControllerEmulator
    extra_config: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.config = self.root / "ztctl.yaml"
        self.write_config(self.extra_config)

    def write_config(self, extra: str = "") -> None:
        backend = "central" if is_central(self.emulator) else "zerotier-one"
        self.config.write_text(
            f"database:\n  url: {self.database_url}\n"
            f"controller:\n  type: {backend}\n  url: {self.emulator.url}\n  retries: 1\n  timeout: 5\n"
            # The Central emulator here enforces no rate limit, so the tests need not wait for one.
            f"{'  rate: 100' + chr(10) if backend == 'central' else ''}{extra}",
            encoding="utf-8",
        )

    def environment(self) -> dict[str, str]:
        return {
            "ZTCTL_CONFIG": str(self.config),
            "ZTCTL_CONTROLLER_TOKEN": TOKEN,
            "ZTCTL_DATABASE_URL": "",
            "ZTCTL_CONTROLLER_URL": "",
            "ZTCTL_CONTROLLER_TOKEN_FILE": "",
            # Wide enough that no table cell wraps, so tests can look for a phrase.
            "COLUMNS": "400",
            **self.env,
        }

    def run(self, *args: str, input: str | None = None):
        runner = CliRunner()
        return runner.invoke(app, list(args), env=self.environment(), input=input, catch_exceptions=False)

    def load_settings(self):
        """The settings this workspace's CLI runs would use, for tests that drive the engine directly."""
        from ztctl.config import load_settings

        return load_settings(self.config, environ=self.environment())

    def run_json(self, *args: str) -> tuple[int, dict]:
        result = self.run("--output", "json", *args)
        return result.exit_code, json.loads(result.stdout)

    def load(self, text: str) -> None:
        path = self.root / "portal.yaml"
        path.write_text(text, encoding="utf-8")
        result = self.run("portal", "load", str(path))
        assert result.exit_code == 0, result.output

    def sql(self, statement: str, **parameters: object) -> list[tuple]:
        """Run one SQL statement on the portal database, as another program writing to it would."""
        engine = sa.create_engine(_sync_url(self.database_url))
        try:
            with engine.begin() as connection:
                result = connection.execute(sa.text(statement), parameters)
                return [tuple(row) for row in result] if result.returns_rows else []
        finally:
            engine.dispose()

    def table_rows(self) -> dict[str, list[tuple]]:
        """Every row of every table, to prove that a read-only run changed nothing."""
        engine = sa.create_engine(_sync_url(self.database_url))
        try:
            metadata = sa.MetaData()
            metadata.reflect(engine)
            with engine.connect() as connection:
                return {
                    name: sorted(map(tuple, connection.execute(table.select()).all()), key=repr)
                    for name, table in metadata.tables.items()
                }
        finally:
            engine.dispose()


def _sync_url(url: str) -> str:
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    return url
