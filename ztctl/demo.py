"""The sample scenario behind ``ztctl demo``: an emulated controller and a portal that disagree.

Every kind of drift appears once: an expired activation whose member is
still authorized, an active membership deauthorized on the controller, one
missing from it, an inactive membership authorized by hand, an active bridge
that must stay, and unknown members. A third network is not in the portal
and must stay untouched.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import SecretStr

from ztctl.config import (
    ControllerSettings,
    DatabaseSettings,
    LoadedSettings,
    PolicySettings,
    Settings,
    UnknownMemberPolicy,
)
from ztctl.controller.emulator import ControllerEmulator

CONTROLLER_ADDRESS = "8056c2e21c"
ENGINEERING = f"{CONTROLLER_ADDRESS}000001"
LAB = f"{CONTROLLER_ADDRESS}000002"
UNMANAGED = f"{CONTROLLER_ADDRESS}0000ff"

# node ID -> (authorized, active bridge) on the emulated controller before the run.
ENGINEERING_MEMBERS = {
    "a1b2c3d4e5": (True, False),   # alice: active and authorized, in line
    "b2c3d4e5f6": (True, False),   # bob: activation expired an hour ago
    "c3d4e5f6a7": (False, False),  # carol: active in the portal, deauthorized on the controller
    "e5f6a7b8c9": (True, False),   # erin: inactive in the portal, authorized by hand
    "b41d9e0001": (True, True),    # site router: inactive, but an active bridge
    "0badc0ffee": (True, False),   # unknown to the portal, authorized by hand
    "0000dead01": (False, False),  # unknown to the portal, a device trying to join
}


@dataclass
class DemoSetup:
    emulator: ControllerEmulator
    settings: LoadedSettings
    portal_file: Path


def portal_yaml(now: datetime) -> str:
    def at(delta: timedelta) -> str:
        return (now + delta).strftime("%Y-%m-%dT%H:%M:%SZ")

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
          - start: {at(timedelta(hours=-2))}
            expires: {at(timedelta(hours=6))}
      - node: b2c3d4e5f6
        owner: bob
        name: bob-phone
        state: active
        activations:
          - start: {at(timedelta(hours=-9))}
            expires: {at(timedelta(hours=-1))}
      - node: c3d4e5f6a7
        owner: carol
        name: carol-desktop
        state: active
      - node: d4e5f6a7b8
        owner: dave
        name: dave-tablet
        state: active
      - node: e5f6a7b8c9
        owner: erin
        name: erin-old-laptop
        state: inactive
      - node: b41d9e0001
        owner: facilities
        name: site-router
        state: inactive
  - id: "{LAB}"
    name: lab
    memberships:
      - node: 1a2b3c4d5e
        owner: guest
        state: inactive
"""


def start_demo(workdir: Path, now: datetime) -> DemoSetup:
    """Start the emulator with the controller's side of the scenario and write the portal file."""
    token = secrets.token_hex(12)
    emulator = ControllerEmulator(token=token, address=CONTROLLER_ADDRESS).start()
    emulator.create_network(ENGINEERING, name="engineering", private=True)
    emulator.create_network(LAB, name="lab", private=False)
    emulator.create_network(UNMANAGED, name="not-in-the-portal", private=True)
    for node_id, (authorized, bridge) in ENGINEERING_MEMBERS.items():
        emulator.put_member(ENGINEERING, node_id, authorized=authorized, active_bridge=bridge)
    emulator.simulate_join(LAB, "1a2b3c4d5e")
    emulator.put_member(UNMANAGED, "9999999999", authorized=True)

    portal_file = workdir / "portal.yaml"
    portal_file.write_text(portal_yaml(now), encoding="utf-8")
    settings = Settings(
        database=DatabaseSettings(url=f"sqlite:///{workdir / 'portal.db'}"),
        controller=ControllerSettings(url=emulator.url, token=SecretStr(token)),
        # Deauthorize unknown members at once, so the demo shows the policy at work.
        policies=PolicySettings(unknown=UnknownMemberPolicy(action="deauthorize", grace=timedelta(0))),
    )
    loaded = LoadedSettings(settings, None, {"token": token, "origin": "the demo"})
    return DemoSetup(emulator, loaded, portal_file)


def write_demo_config(setup: DemoSetup, workdir: Path) -> Path:
    """Write a config file and token file for the running demo, so that other commands can be tried on it."""
    token_file = workdir / "authtoken.secret"
    token_file.touch(mode=0o600)
    token_file.write_text(setup.settings.token_layer["token"], encoding="utf-8")
    config = workdir / "ztctl.yaml"
    config.write_text(
        "# Written by `ztctl demo --keep`; valid while that demo keeps its emulator running.\n"
        f"database:\n  url: {setup.settings.settings.database.url}\n"
        f"controller:\n  url: {setup.emulator.url}\n  token_file: {token_file}\n"
        "policies:\n  unknown:\n    action: deauthorize\n    grace: 0s\n",
        encoding="utf-8",
    )
    return config
