"""Alembic environment for the portal schema.

``ztctl.portal.db`` runs the migrations with a configuration built in code and
passes the connection in ``config.attributes["connection"]``. That connection
is already in a transaction, which commits all the migrations together.

Offline mode (``sql=True``) writes the SQL for the URL in the
``sqlalchemy.url`` option instead of running it, for review before a
production upgrade.
"""

from __future__ import annotations

from alembic import context

from ztctl.portal.models import Base


def run_migrations_offline() -> None:
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=Base.metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "no database connection in the Alembic configuration: run migrations with `ztctl db upgrade`"
        )
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite can change a table only by copying it, which batch mode does.
        render_as_batch=connection.dialect.name == "sqlite",
        # DDL on SQLite is transactional here, because ztctl.portal.db emits BEGIN itself.
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
