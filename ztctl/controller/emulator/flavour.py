"""Differences between the controller API of one ``zerotier-one`` release and 1.14.1.

The emulator behaves like 1.14.1 by default. Each property below names one
difference that a client can observe, with the release that introduced or
removed it, so that tests can point the client at an older or newer build.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_VERSION_PATTERN = re.compile(r"(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True, slots=True)
class ApiFlavour:
    """The API behaviour of one ``zerotier-one`` version, with or without the controller."""

    version: str
    major: int
    minor: int
    revision: int
    has_controller: bool = True

    @classmethod
    def from_version(cls, version: str, *, has_controller: bool = True) -> ApiFlavour:
        """Parse ``MAJOR.MINOR.REV`` (for example ``1.14.1``) into a flavour.

        Raises ``ValueError`` when ``version`` has another form.
        """
        match = _VERSION_PATTERN.fullmatch(version)
        if match is None:
            raise ValueError(
                f"invalid zerotier-one version {version!r}: expected MAJOR.MINOR.REV such as 1.14.1"
            )
        major, minor, revision = (int(part) for part in match.groups())
        return cls(version, major, minor, revision, has_controller)

    @property
    def number(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.revision)

    @property
    def uses_httplib(self) -> bool:
        """True from 1.12.0, when the local API moved to cpp-httplib (500 on bad bodies, Bearer)."""
        return self.number >= (1, 12, 0)

    @property
    def accepts_bearer_token(self) -> bool:
        return self.uses_httplib

    @property
    def member_list_is_array(self) -> bool:
        """True on 1.12.0 and 1.12.1, which list members as ``[{"<id>": revision}, ...]``."""
        return (1, 12, 0) <= self.number <= (1, 12, 1)

    @property
    def has_unstable_routes(self) -> bool:
        """True from 1.14.0, which added the ``/unstable/controller/...`` bulk lists."""
        return self.number >= (1, 14, 0)

    @property
    def stores_member_name(self) -> bool:
        """True from 1.14.0; older releases ignore ``name`` in a member POST."""
        return self.number >= (1, 14, 0)

    @property
    def rejects_member_of_unknown_network(self) -> bool:
        """True from 1.14.0; older releases return 200 to a member POST on an unknown network."""
        return self.number >= (1, 14, 0)

    @property
    def deauthorizes_members_on_network_delete(self) -> bool:
        return self.number >= (1, 14, 1)

    @property
    def keeps_member_id_case(self) -> bool:
        """True from 1.12.0, which stores the member ID exactly as typed in the URL."""
        return self.uses_httplib

    @property
    def has_random_network_route(self) -> bool:
        """True from 1.12.0, which added ``POST /controller/network`` (random network ID)."""
        return self.uses_httplib

    @property
    def has_network_update_route(self) -> bool:
        """False on 1.12.0 only, whose ``POST /controller/network/<nwid>`` has no route (404)."""
        return self.number != (1, 12, 0)

    @property
    def has_controller_info_route(self) -> bool:
        """False on 1.12.1 only: ``GET /controller`` was seen returning 404 there.

        ``/controller/network`` works on that release, so a client must not
        decide from ``GET /controller`` alone that the controller is missing.
        """
        return self.number != (1, 12, 1)
