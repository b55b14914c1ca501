"""Single ZeroTier Central API v1 calls, each returning ztctl records.

``CentralApi`` contains the paths, the statuses each call can return and the
parsing of each response. Deciding which calls to make, and when a write is
allowed, is the job of ``CentralClient``. Paths are relative to the configured
base URL, which ends in ``/api/v1``.
"""

from __future__ import annotations

import httpx

from ztctl.controller.base import ControllerMember, ControllerNetwork
from ztctl.controller.central_records import (
    parse_member,
    parse_members,
    parse_network,
    parse_network_ids,
    parse_networks,
)
from ztctl.controller.http import HttpSession
from ztctl.errors import ControllerResponseError, MemberNotFound, NetworkNotFound

WRITE_FORBIDDEN_HINT = (
    "Use an API token of a Central user who may change this network's members, or run with --dry-run "
    "or --audit to read only."
)
READ_FORBIDDEN_HINT = (
    "Give the token's Central user access to this network, or remove the network from ztctl's managed "
    "networks."
)


def network_path(network_id: str) -> str:
    return f"/network/{network_id}"


def member_path(network_id: str, node_id: str) -> str:
    return f"/network/{network_id}/member/{node_id}"


class CentralApi:
    """Typed calls on Central; IDs passed in must already be lower case and valid.

    ``retry=False`` sends a request once and lets a transient failure propagate, for a write
    that ``HttpSession.run_with_retries`` repeats as a whole.
    """

    def __init__(self, http: HttpSession) -> None:
        self.http = http
        self.base_path = httpx.URL(http.base_url).path.rstrip("/")
        """The path of the base URL, such as ``/api/v1``, which every request path starts with."""

    def full_path(self, path: str) -> str:
        """Return the path a request for ``path`` is sent to, base path included, for messages."""
        return f"{self.base_path}{path}"

    def read_network_ids(self) -> list[str]:
        response = self.http.send("GET", "/network", kind="network_list", allowed=(200, 403))
        if response.status_code == 403:
            raise self.forbidden(response, "may not list networks", network_id=None, hint=READ_FORBIDDEN_HINT)
        return parse_network_ids(self.http.decode_json(response), _request_line(response))

    def read_networks(self) -> dict[str, ControllerNetwork]:
        """Return every network the token may see, from one ``GET /network``."""
        response = self.http.send("GET", "/network", kind="network_list", allowed=(200, 403))
        if response.status_code == 403:
            raise self.forbidden(response, "may not list networks", network_id=None, hint=READ_FORBIDDEN_HINT)
        return parse_networks(self.http.decode_json(response), _request_line(response))

    def read_network(self, network_id: str) -> ControllerNetwork:
        path = network_path(network_id)
        response = self.http.send("GET", path, kind="network", allowed=(200, 403, 404), network_id=network_id)
        self._check_network_read(response, network_id)
        body = self.http.decode_json(response, network_id=network_id)
        return parse_network(body, network_id, _request_line(response))

    def read_network_body(self, network_id: str) -> object:
        """Return a network's body as Central sent it, for the fields ``ControllerNetwork`` leaves out."""
        path = network_path(network_id)
        response = self.http.send("GET", path, kind="network", allowed=(200, 403, 404), network_id=network_id)
        self._check_network_read(response, network_id)
        return self.http.decode_json(response, network_id=network_id)

    def read_members(self, network_id: str) -> list[ControllerMember]:
        path = f"{network_path(network_id)}/member"
        response = self.http.send("GET", path, kind="list", allowed=(200, 403, 404), network_id=network_id)
        self._check_network_read(response, network_id)
        body = self.http.decode_json(response, network_id=network_id)
        return parse_members(body, network_id, _request_line(response))

    def read_member(self, network_id: str, node_id: str, *, retry: bool = True) -> ControllerMember | None:
        """Return one member, or None when Central returns 404."""
        path = member_path(network_id, node_id)
        response = self.http.send(
            "GET",
            path,
            kind="member_get",
            allowed=(200, 403, 404),
            retry=retry,
            network_id=network_id,
            node_id=node_id,
        )
        if response.status_code == 404:
            return None
        if response.status_code == 403:
            raise self.forbidden(
                response,
                f"may not read network {network_id}",
                network_id=network_id,
                node_id=node_id,
                hint=READ_FORBIDDEN_HINT,
            )
        body = self.http.decode_json(response, network_id=network_id, node_id=node_id)
        return parse_member(body, network_id, _request_line(response), expected_node_id=node_id)

    def post_member(
        self, network_id: str, node_id: str, body: dict[str, object], *, kind: str, not_done: str
    ) -> ControllerMember:
        """POST ``body`` to a member, once, and return the member as stored.

        Central creates a member that does not exist, so the caller checks first. Raises
        ``ControllerResponseError`` when the stored ``config.authorized`` differs from the one sent.
        ``not_done`` is the past participle for messages, such as ``deauthorized``.
        """
        path = member_path(network_id, node_id)
        response = self.http.send(
            "POST",
            path,
            kind=kind,
            json=body,
            allowed=(200, 403, 404),
            retry=False,
            network_id=network_id,
            node_id=node_id,
        )
        if response.status_code == 404:
            raise self.network_not_found(network_id, _request_line(response))
        if response.status_code == 403:
            raise self.write_forbidden(response, network_id, node_id, not_done)

        stored = self.http.decode_json(response, network_id=network_id, node_id=node_id)
        member = parse_member(stored, network_id, _request_line(response), expected_node_id=node_id)
        sent = body.get("config")
        if isinstance(sent, dict) and "authorized" in sent and member.authorized is not sent["authorized"]:
            sent_value = _json_bool(sent["authorized"])
            raise ControllerResponseError(
                f"{_request_line(response)} sent config.authorized={sent_value} but Central "
                f"stored config.authorized={_json_bool(member.authorized)}",
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
            allowed=(200, 204, 403, 404),
            retry=False,
            network_id=network_id,
            node_id=node_id,
        )
        if response.status_code == 404:
            raise self.member_not_found(
                network_id, node_id, "deleted", f"{_request_line(response)} returned HTTP 404"
            )
        if response.status_code == 403:
            raise self.write_forbidden(response, network_id, node_id, "deleted")

        # The specification documents no body for a deletion; a member object, if sent, is its last state.
        if not response.content.strip():
            return current
        body = self.http.decode_json(response, network_id=network_id, node_id=node_id)
        if body == {}:
            return current
        return parse_member(body, network_id, _request_line(response), expected_node_id=node_id)

    def _check_network_read(self, response: httpx.Response, network_id: str) -> None:
        if response.status_code == 404:
            raise self.network_not_found(network_id, _request_line(response))
        if response.status_code == 403:
            raise self.forbidden(
                response,
                f"may not read network {network_id}",
                network_id=network_id,
                hint=READ_FORBIDDEN_HINT,
            )

    def forbidden(
        self,
        response: httpx.Response,
        problem: str,
        *,
        network_id: str | None,
        node_id: str | None = None,
        hint: str,
    ) -> ControllerResponseError:
        """Build the error for a 403; ``problem`` names what the token may not do."""
        return ControllerResponseError(
            f"{_request_line(response)} returned HTTP 403: {self.http.token_source} {problem}",
            status_code=403,
            network_id=network_id,
            node_id=node_id,
            hint=hint,
        )

    def write_forbidden(
        self, response: httpx.Response, network_id: str, node_id: str, not_done: str
    ) -> ControllerResponseError:
        return self.forbidden(
            response,
            f"may read network {network_id} but not change it, so member {node_id} was not {not_done}",
            network_id=network_id,
            node_id=node_id,
            hint=WRITE_FORBIDDEN_HINT,
        )

    def network_not_found(self, network_id: str, request: str) -> NetworkNotFound:
        return NetworkNotFound(
            f"network {network_id} not found on ZeroTier Central at {self.http.base_url} "
            f"({request} returned HTTP 404)",
            status_code=404,
            network_id=network_id,
            hint="Check the network ID, and that the token's Central user has access to the network.",
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


def _request_line(response: httpx.Response) -> str:
    """Name the request of a response by method and full path, such as ``GET /api/v1/network``."""
    return f"{response.request.method} {response.request.url.path}"


def _json_bool(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else repr(value)
