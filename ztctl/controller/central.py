"""The client for ZeroTier Central, the hosted network controller (API v1).

Central lists a network's members in one array, keyed by ``nodeId``. IDs are
sent in lower case. Writes re-read the member first because a POST to a
missing member creates it. Every request passes a client-side rate limiter,
since Central allows 20 requests per second on free accounts and 100 on paid
ones.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import httpx

from ztctl.controller.base import (
    ControllerMember,
    ControllerNetwork,
    ControllerStatus,
)
from ztctl.controller.central_api import CentralApi, member_path
from ztctl.controller.central_records import CentralStatus, can_authorize, parse_status
from ztctl.controller.conditional import ConditionalWriteClient
from ztctl.controller.http import ErrorHints, HttpSession
from ztctl.controller.http_client import build_http_client, check_base_url
from ztctl.controller.rate_limit import RateLimitedTransport, RateLimiter
from ztctl.controller.zerotier_one_records import (
    normalize_network_id,
    normalize_node_id,
)
from ztctl.errors import ControllerResponseError, MemberNotFound, NotAController

logger = logging.getLogger(__name__)

DEFAULT_RATE = 10.0
"""Requests per second: half of the 20 that Central allows a free account, which leaves room for
other tools that use the same account."""

TOKEN_HINT = (
    "Create an API token under Account in ZeroTier Central and give it through controller.token_file or "
    "ZTCTL_CONTROLLER_TOKEN. Also check that controller.url is Central's API base URL, ending in /api/v1."
)
UNREACHABLE_HINT = (
    "Check controller.url (Central's API base URL, ending in /api/v1) and that this host can reach it "
    "over HTTPS."
)
NOT_CENTRAL_HINT = "Set controller.url to Central's API base URL, ending in /api/v1."


class CentralClient(ConditionalWriteClient):
    """A connection to ZeroTier Central, authenticated with ``Authorization: token <TOKEN>``.

    ``rate`` bounds the requests per second across all threads (see ``RateLimiter``),
    ``concurrency`` the connections, and ``retries`` the retries of each request and of each
    write as a whole. The token is kept only in the HTTP client's headers, never in a message,
    a log line or ``repr``.

    ``stats.by_kind`` counts every request sent, retries included, under one of: ``status``,
    ``network_list``, ``network``, ``list``, ``member_get``, ``authorize``, ``deauthorize`` and
    ``delete``.
    """

    backend = "central"

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        read_only: bool,
        timeout: float = 10.0,
        connect_timeout: float = 3.0,
        concurrency: int = 4,
        retries: int = 3,
        rate: float = DEFAULT_RATE,
        token_source: str = "the configured token",
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(read_only=read_only)
        if concurrency < 1:
            raise ValueError(f"invalid concurrency {concurrency}: expected 1 or more")
        if retries < 0:
            raise ValueError(f"invalid retries {retries}: expected 0 or more")
        token = token.strip()
        if not token:
            raise ValueError(f"{token_source} is empty: expected a ZeroTier Central API token")

        self.base_url = check_base_url(base_url)
        # Up to `concurrency` requests may be in flight when a response reports the remaining budget.
        self.rate_limiter = RateLimiter(rate, reserve=concurrency)
        if transport is None:
            # retries=0 because HttpSession retries connection failures itself, with backoff and counting.
            limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
            transport = httpx.HTTPTransport(limits=limits, retries=0)
        client = build_http_client(
            self.base_url,
            {"Authorization": f"token {token}"},
            read_only=read_only,
            timeout=timeout,
            connect_timeout=connect_timeout,
            concurrency=concurrency,
            keepalive=True,
            transport=RateLimitedTransport(transport, self.rate_limiter),
        )
        self.http = HttpSession(
            client,
            base_url=self.base_url,
            stats=self.stats,
            retries=retries,
            token_source=token_source,
            hints=ErrorHints(token_rejected=TOKEN_HINT, unreachable=UNREACHABLE_HINT),
            max_in_flight=concurrency,
        )
        self.api = CentralApi(self.http)
        self.version: str | None = None
        self._status: CentralStatus | None = None
        """Central's version that ``probe()`` read."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, read_only={self.read_only}, "
            f"rate={self.rate_limiter.rate!r})"
        )

    def set_deadline(self, deadline: float | None) -> None:
        super().set_deadline(deadline)
        self.http.deadline = deadline

    def close(self) -> None:
        self.http.close()

    # Probe

    def probe(self) -> ControllerStatus:
        """Check that the URL is Central and that Central accepts the token.

        ``GET /status`` names the token's user when Central accepts the token; a status without a
        user is followed by ``GET /network``, which needs a valid token.
        """
        status = self._read_status()
        if not status.has_user:
            self.api.read_network_ids()
        if status.read_only_mode:
            logger.warning(
                "ZeroTier Central at %s is in read-only mode: every change will fail", self.base_url
            )
        self.version = status.version
        self._status = status
        return ControllerStatus(
            address="", version=status.version, api_version=status.api_version, backend=self.backend
        )

    def _read_status(self) -> CentralStatus:
        response = self.http.send("GET", "/status", kind="status", allowed=(200, 403, 404))
        status = None
        if response.status_code == 200:
            try:
                status = parse_status(self.http.decode_json(response))
            except ControllerResponseError:
                status = None
        if status is None:
            raise NotAController(
                f"{self.base_url} is not ZeroTier Central: GET /status returned HTTP {response.status_code} "
                "without a Central status",
                hint=NOT_CENTRAL_HINT,
            )
        return status

    # Reads

    def may_change(self, network_ids: list[str]) -> dict[str, bool]:
        """Read each network's ``permissions`` for the token's user; Central's read-only mode denies them all."""
        status = self._status
        if status is None:
            return {}
        if status.read_only_mode:
            return dict.fromkeys(network_ids, False)
        if status.user_id is None:
            return {}
        answers = {}
        for network_id in network_ids:
            allowed = can_authorize(self.api.read_network_body(network_id), status.user_id)
            if allowed is not None:
                answers[network_id] = allowed
        return answers

    def list_network_ids(self) -> list[str]:
        return self.api.read_network_ids()

    def list_networks(self) -> dict[str, ControllerNetwork] | None:
        return self.api.read_networks()

    def get_network(self, network_id: str) -> ControllerNetwork:
        return self.api.read_network(normalize_network_id(network_id))

    def get_member(self, network_id: str, node_id: str) -> ControllerMember | None:
        return self.api.read_member(normalize_network_id(network_id), normalize_node_id(node_id))

    def list_members(
        self,
        network_id: str,
        cached: Mapping[str, ControllerMember] | None = None,
    ) -> list[ControllerMember]:
        """Return every member of a network, sorted by node ID, from one request.

        ``cached`` is not used: Central returns every member in full in its member list.
        """
        members = self.api.read_members(normalize_network_id(network_id))
        return sorted(members, key=lambda member: member.node_id)

    # The requests behind the conditional writes of ConditionalWriteClient.

    def _read_member_once(self, network_id: str, node_id: str) -> ControllerMember | None:
        return self.api.read_member(network_id, node_id, retry=False)

    def _post_authorized_once(self, network_id: str, node_id: str, authorized: bool) -> ControllerMember:
        action = "authorize" if authorized else "deauthorize"
        body: dict[str, object] = {"config": {"authorized": authorized}}
        return self.api.post_member(network_id, node_id, body, kind=action, not_done=f"{action}d")

    def _post_new_member_once(self, network_id: str, node_id: str, name: str | None) -> ControllerMember:
        # Central returns 404 to a POST under a missing network, so the network needs no read first.
        body: dict[str, object] = {"config": {"authorized": True}}
        if name:
            body["name"] = name
        return self.api.post_member(network_id, node_id, body, kind="authorize", not_done="created")

    def _delete_once(self, member: ControllerMember) -> ControllerMember:
        return self.api.delete_member(member)

    def _member_not_found(self, network_id: str, node_id: str, not_done: str) -> MemberNotFound:
        detail = f"GET {self.api.full_path(member_path(network_id, node_id))} returned HTTP 404"
        return self.api.member_not_found(network_id, node_id, not_done, detail)
