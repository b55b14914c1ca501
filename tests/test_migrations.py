"""Tests of the Alembic migrations: they build exactly the models' schema, both ways, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import sqlalchemy
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from db_fixtures import *  # noqa: F403

from ztctl.errors import DatabaseError
from ztctl.portal import db
from ztctl.portal.db import (
    WriteAccess,
    alembic_config,
    create_portal_engine,
    ensure_schema,
    schema_state,
    upgrade_schema,
)
from ztctl.portal.models import Base


def schema_differences(engine: sqlalchemy.Engine) -> list[object]:
    with engine.connect() as connection:
        return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


def table_names(engine: sqlalchemy.Engine) -> set[str]:
    with engine.connect() as connection:
        return set(sqlalchemy.inspect(connection).get_table_names())


HEAD = "0004"


def test_upgrade_matches_models(blank_portal_url: str) -> None:
    engine = create_portal_engine(blank_portal_url, access=WriteAccess.ALL)
    revisions = upgrade_schema(engine)
    differences = schema_differences(engine)
    engine.dispose()
    assert revisions == (None, HEAD)
    assert differences == []


def test_fixture_database_matches_models(portal_url: str) -> None:
    engine = create_portal_engine(portal_url, access=WriteAccess.NONE)
    differences = schema_differences(engine)
    state = schema_state(engine)
    engine.dispose()
    assert differences == []
    assert state.is_current


def test_upgrade_creates_constraints(blank_portal_url: str) -> None:
    """Check constraints are not compared by autogenerate, so check their names directly."""
    engine = create_portal_engine(blank_portal_url, access=WriteAccess.ALL)
    upgrade_schema(engine)
    with engine.connect() as connection:
        inspector = sqlalchemy.inspect(connection)
        membership_checks = {check["name"] for check in inspector.get_check_constraints("memberships")}
        activation_checks = {check["name"] for check in inspector.get_check_constraints("activations")}
        membership_uniques = {unique["name"] for unique in inspector.get_unique_constraints("memberships")}
        activation_keys = {key["name"] for key in inspector.get_foreign_keys("activations")}
    engine.dispose()
    assert membership_checks == {"ck_memberships_state"}
    assert activation_checks == {"ck_activations_expires_after_start"}
    assert membership_uniques == {"uq_memberships_network_id"}
    assert activation_keys == {"fk_activations_membership_id_memberships"}


def test_downgrade_and_upgrade_again(blank_portal_url: str) -> None:
    engine = create_portal_engine(blank_portal_url, access=WriteAccess.ALL)
    upgrade_schema(engine)
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "base")
    tables_at_base = table_names(engine)
    state_at_base = schema_state(engine)

    revisions = upgrade_schema(engine)
    differences = schema_differences(engine)
    engine.dispose()
    assert tables_at_base <= {"alembic_version"}
    assert state_at_base.is_empty
    assert state_at_base.current_revision is None
    assert revisions == (None, HEAD)
    assert differences == []


def test_schema_state_transitions(blank_portal_url: str) -> None:
    engine = create_portal_engine(blank_portal_url, access=WriteAccess.ALL)
    before = schema_state(engine)
    upgrade_schema(engine)
    after = schema_state(engine)
    engine.dispose()
    assert before.is_empty
    assert not before.is_current
    assert before.head_revision == HEAD
    assert not after.is_empty
    assert after.is_current
    assert after.current_revision == HEAD


def test_migrations_run_outside_source_tree(
    blank_portal_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No alembic.ini and no relative path: the working directory must not matter."""
    monkeypatch.chdir(tmp_path)
    engine = create_portal_engine(blank_portal_url, access=WriteAccess.ALL)
    upgrade_schema(engine)
    engine.dispose()
    assert not (tmp_path / "alembic.ini").exists()
    assert db.MIGRATIONS_DIR.is_absolute()


def test_offline_sql_for_review() -> None:
    config = alembic_config()
    config.set_main_option("sqlalchemy.url", "postgresql+psycopg://ztctl@db.example/portal")
    config.output_buffer = io.StringIO()
    command.upgrade(config, "head", sql=True)
    sql = config.output_buffer.getvalue()
    assert "CREATE TABLE networks" in sql
    assert "CONSTRAINT ck_memberships_state CHECK" in sql
    assert "INSERT INTO alembic_version (version_num) VALUES ('0001')" in sql
    assert "UPDATE alembic_version SET version_num='0002'" in sql


def test_schema_behind_is_refused_then_upgraded(blank_portal_url: str) -> None:
    engine = create_portal_engine(blank_portal_url, access=WriteAccess.ALL)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0001")
    with pytest.raises(DatabaseError) as caught:
        ensure_schema(engine, create_if_empty=True)
    revisions = upgrade_schema(engine)
    state = schema_state(engine)
    engine.dispose()
    assert "0001" in str(caught.value)
    assert "ztctl db upgrade" in str(caught.value) + str(caught.value.hint)
    assert revisions == ("0001", HEAD)
    assert state.is_current

