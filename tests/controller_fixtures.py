"""Pytest fixtures that run the controller emulator on a loopback port.

Import them from ``conftest.py`` (or a test module) with
``from controller_fixtures import *``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ztctl.controller.emulator import CentralEmulator, ControllerEmulator

EMULATOR_TOKEN = "emulator-test-token"
BACKENDS = ("zerotier-one", "central")

__all__ = ["BACKENDS", "EMULATOR_TOKEN", "any_emulator", "emulator", "make_emulator"]


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., ControllerEmulator]]:
    """Return a factory that starts a ``ControllerEmulator`` with the given keyword arguments.

    The token defaults to ``EMULATOR_TOKEN``. Every emulator the factory
    started is stopped when the test ends.
    """
    started: list[ControllerEmulator] = []

    def start_emulator(**kwargs: Any) -> ControllerEmulator:
        kwargs.setdefault("token", EMULATOR_TOKEN)
        emulator = ControllerEmulator(**kwargs).start()
        started.append(emulator)
        return emulator

    yield start_emulator

    for emulator in started:
        emulator.stop()


@pytest.fixture
def emulator(make_emulator: Callable[..., ControllerEmulator]) -> ControllerEmulator:
    """A running 1.14.1 emulator with no networks, token ``EMULATOR_TOKEN``."""
    return make_emulator()


@pytest.fixture(params=BACKENDS)
def any_emulator(request: pytest.FixtureRequest, make_emulator: Callable[..., ControllerEmulator]) -> Any:
    """A running emulator of each backend in turn: zerotier-one 1.14.1, then ZeroTier Central.

    End-to-end tests take this one, so that a behaviour that differs between
    the backends fails a test.
    """
    if request.param == "zerotier-one":
        return make_emulator(address="3233204505")
    emulator = CentralEmulator(token=EMULATOR_TOKEN, rate_limit=None).start()
    request.addfinalizer(emulator.stop)
    return emulator
