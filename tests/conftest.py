"""Fixtures shared by the whole suite: portal databases (SQLite and PostgreSQL) and the emulator."""

from controller_fixtures import *  # noqa: F403
from db_fixtures import *  # noqa: F403
