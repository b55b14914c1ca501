"""Single zerotier-one controller API calls, each returning ztctl records.

``ZeroTierOneApi`` contains the paths, the statuses each call can return and
the parsing of each response. Deciding which calls to make, and when a write is
allowed, is the job of ``ZeroTierOneClient``.
"""

from __future__ import annotations

from ztctl.controller.base import ControllerMember, ControllerNetwork
from ztctl.controller.http import HttpSession
from ztctl.controller.zerotier_one_records import (
    is_bulk_list,
    parse_bulk_members,
    parse_bulk_networks,
    parse_member,
    parse_member_revisions,
    parse_network,
)
from ztctl.errors import ControllerResponseError, MemberNotFound, NetworkNotFound


def member_path(network_id: str, node_id: str) -> str:
    return f"/controller/network/{network_id}/member/{node_id}"


class ZeroTierOneApi:
    """Typed calls on one controller; IDs passed in must already be lower case and valid.

    ``retry=False`` sends a request once and lets a transient failure propagate, for a write
    that ``HttpSession.run_with_retries`` repeats as a whole.
    """

    def __init__(self, http: HttpSession) -> None:
        self.http = http

    def read_network(self, network_id: str, *, retry: bool = True) -> ControllerNetwork:
        path = f"/controller/network/{network_id}"
        response = self.http.send(
            "GET", path, kind="network", allowed=(200, 404), retry=retry, network_id=network_id
        )
        if response.status_code == 404:
            raise self.network_not_found(network_id, f"GET {path}")
        body = self.http.decode_json(response, network_id=network_id)
        return parse_network(body, network_id, f"GET {path}")

    def read_bulk_networks(self) -> dict[str, ControllerNetwork] | None:
        """Return every network from ``GET /unstable/controller/network`` (1.14.0+), or None on a 404."""
        path = "/unstable/controller/network"
        response = self.http.send("GET", path, kind="bulk_network_list", allowed=(200, 404))
        if response.status_code == 404:
            return None
        return parse_bulk_networks(self.http.decode_json(response), f"GET {path}")

    def read_member(self, network_id: str, node_id: str, *, retry: bool = True) -> ControllerMember | None:
        """Return one member, or None when the controller returns 404."""
        path = member_path(network_id, node_id)
        response = self.http.send(
            "GET",
            path,
            kind="member_get",
            allowed=(200, 404),
            retry=retry,
            network_id=network_id,
            node_id=node_id,
        )
        if response.status_code == 404:
            return None
        body = self.http.decode_json(response, network_id=network_id, node_id=node_id)
        return parse_member(body, network_id, f"GET {path}", expected_node_id=node_id)

    def read_member_revisions(self, network_id: str) -> dict[str, int]:
        """Return ``{node ID: revision}`` for every member from the plain member list."""
        path = f"/controller/network/{network_id}/member"
        response = self.http.send("GET", path, kind="list", allowed=(200, 404), network_id=network_id)
        if response.status_code == 404:
            raise self.network_not_found(network_id, f"GET {path}")
        body = self.http.decode_json(response, network_id=network_id)
        return parse_member_revisions(body, network_id, f"GET {path}")

    def read_bulk_members(self, network_id: str, *, strict: bool) -> list[ControllerMember] | None:
        """Return every member from the bulk member list, or None when this server may lack it.

        None means a 404, which the plain list must explain, or, unless ``strict``, a 200 whose
        body is not JSON shaped like the bulk list, because servers older than 1.14 may return
        such a body for an unknown path.
        """
        path = f"/unstable/controller/network/{network_id}/member"
        response = self.http.send("GET", path, kind="bulk_list", allowed=(200, 404), network_id=network_id)
        if response.status_code == 404:
            return None
        try:
            body = self.http.decode_json(response, network_id=network_id)
        except ControllerResponseError:
            if strict:
                raise
            return None
        if not strict and not is_bulk_list(body):
            return None
        return parse_bulk_members(body, network_id, f"GET {path}")

    def post_member(
        self, network_id: str, node_id: str, body: dict[str, object], *, kind: str
    ) -> ControllerMember:
        """POST ``body`` to a member, once, and return the member as stored.

        Raises ``ControllerResponseError`` when the stored ``authorized`` differs from the one
        sent: the API coerces a value of the wrong type instead of rejecting it.
        """
        path = member_path(network_id, node_id)
        response = self.http.send(
            "POST",
            path,
            kind=kind,
            json=body,
            allowed=(200, 404),
            retry=False,
            network_id=network_id,
            node_id=node_id,
        )
        if response.status_code == 404:
            # zerotier-one 1.14.0 and later return 404 for a POST under a missing network.
            raise self.network_not_found(network_id, f"POST {path}")

        stored = self.http.decode_json(response, network_id=network_id, node_id=node_id)
        member = parse_member(stored, network_id, f"POST {path}", expected_node_id=node_id)
        if "authorized" in body and member.authorized is not body["authorized"]:
            raise ControllerResponseError(
                f"POST {path} sent authorized={_json_bool(body['authorized'])} but the controller "
                f"stored authorized={_json_bool(member.authorized)}",
                network_id=network_id,
                node_id=node_id,
            )
        return member

    def delete_member(self, current: ControllerMember) -> ControllerMember:
        """DELETE a member, once, and return its last state; raise ``MemberNotFound`` on 404."""
        network_id, node_id = current.network_id, current.node_id
        path = member_path(network_id, node_id)
        response = self.http.send(
            "DELETE",
            path,
            kind="delete",
            allowed=(200, 404),
            retry=False,
            network_id=network_id,
            node_id=node_id,
        )
        if response.status_code == 404:
            raise self.member_not_found(network_id, node_id, "deleted", f"DELETE {path} returned HTTP 404")

        # zerotier-one returns the deleted member; an empty response still means it was deleted.
        if not response.content.strip():
            return current
        body = self.http.decode_json(response, network_id=network_id, node_id=node_id)
        if body == {}:
            return current
        return parse_member(body, network_id, f"DELETE {path}", expected_node_id=node_id)

    def network_not_found(self, network_id: str, request: str) -> NetworkNotFound:
        return NetworkNotFound(
            f"network {network_id} not found on the controller at {self.http.base_url} "
            f"({request} returned HTTP 404)",
            status_code=404,
            network_id=network_id,
            hint="Check the network ID: a controller serves only the networks whose ID starts with "
            "its node address.",
        )

    @staticmethod
    def member_not_found(network_id: str, node_id: str, not_done: str, detail: str) -> MemberNotFound:
        """Build the error for a missing member; ``not_done`` is the past participle, such as ``deleted``."""
        return MemberNotFound(
            f"member {node_id} not found on network {network_id} ({detail}), so it was not {not_done}",
            status_code=404,
            network_id=network_id,
            node_id=node_id,
        )


def _json_bool(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else repr(value)
