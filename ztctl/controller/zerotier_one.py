"""The client for the network controller built into zerotier-one.

Supports zerotier-one 1.10 to 1.14, and 1.16 builds that include the
controller. IDs are sent in lower case because the controller stores an ID in
the case it was typed in the request path. Writes re-read the member first
because a POST to a missing member creates it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed

import httpx

from ztctl.controller.base import (
    ControllerMember,
    ControllerNetwork,
    ControllerStatus,
)
from ztctl.controller.conditional import ConditionalWriteClient
from ztctl.controller.http import ErrorHints, HttpSession
from ztctl.controller.http_client import build_http_client, check_base_url
from ztctl.controller.zerotier_one_api import ZeroTierOneApi, member_path
from ztctl.controller.zerotier_one_records import (
    normalize_network_id,
    normalize_node_id,
    parse_network_ids,
    parse_status,
    parse_version,
)
from ztctl.errors import (
    ControllerResponseError,
    ControllerUnreachable,
    MemberNotFound,
    NotAController,
)

logger = logging.getLogger(__name__)

BULK_LIST_SINCE = (1, 14, 0)
"""First zerotier-one version with ``GET /unstable/controller/network/<id>/member``."""

TOKEN_HINT = (
    "Use the token in authtoken.secret in the zerotier-one home directory (/var/lib/zerotier-one on "
    "Linux, readable by root only). A caller that is not on loopback also needs its address in "
    "allowManagementFrom in local.conf."
)
UNREACHABLE_HINT = (
    "Check that zerotier-one is running and listening at this URL; its port is in zerotier-one.port "
    "in its home directory (9993 by default)."
)
NO_CONTROLLER_HINT = (
    "Run a zerotier-one build that includes the controller: one built with ZT_NONFREE=1, a package "
    "that includes it, or zerotier-one 1.14.x."
)


class ZeroTierOneClient(ConditionalWriteClient):
    """A connection to the controller API of one zerotier-one node, authenticated with ``X-ZT1-Auth``.

    ``concurrency`` bounds the member GETs in flight when the bulk member list is missing, and
    ``retries`` bounds the retries of each request and of each write as a whole. The token is kept
    only in the HTTP client's headers, never in a message, a log line or ``repr``.

    ``stats.by_kind`` counts every request sent, retries included, under one of: ``status``,
    ``controller``, ``network_list``, ``network``, ``list``, ``bulk_list``, ``member_get``,
    ``authorize``, ``deauthorize`` and ``delete``.
    """

    backend = "zerotier-one"

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
        keepalive: bool = False,
        token_source: str = "the configured token",
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(read_only=read_only)
        if concurrency < 1:
            raise ValueError(f"invalid concurrency {concurrency}: expected 1 or more")
        if retries < 0:
            raise ValueError(f"invalid retries {retries}: expected 0 or more")
        # The server trims authtoken.secret when it reads it, so a trailing newline is not part of the token.
        token = token.strip()
        if not token:
            raise ValueError(f"{token_source} is empty: expected the controller's API token")

        self.base_url = check_base_url(base_url)
        self.concurrency = concurrency
        # keepalive is off by default: measured on a real zerotier-one 1.14.1 controller on loopback,
        # httpx took about 26 ms per request over a reused keep-alive connection (Nagle's algorithm
        # meeting delayed ACKs) and about 0.45 ms per request with "Connection: close".
        client = build_http_client(
            self.base_url,
            {"X-ZT1-Auth": token},
            read_only=read_only,
            timeout=timeout,
            connect_timeout=connect_timeout,
            concurrency=concurrency,
            keepalive=keepalive,
            transport=transport,
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
        self.api = ZeroTierOneApi(self.http)
        self.version: str | None = None
        """The zerotier-one version that ``probe()`` read, such as ``1.14.1``."""
        self.has_bulk_list: bool | None = None
        """Whether the controller has the bulk member list; None until its version or a response shows it."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, read_only={self.read_only})"

    def set_deadline(self, deadline: float | None) -> None:
        super().set_deadline(deadline)
        self.http.deadline = deadline

    def close(self) -> None:
        self.http.close()

    # Probe

    def probe(self) -> ControllerStatus:
        address, version = self._read_status()
        self.version = version
        parsed_version = parse_version(version)
        if parsed_version is not None:
            self.has_bulk_list = parsed_version >= BULK_LIST_SINCE
        api_version = self._check_controller(version)
        return ControllerStatus(address=address, version=version, api_version=api_version)

    def _read_status(self) -> tuple[str, str]:
        response = self.http.send("GET", "/status", kind="status", allowed=(200, 404))
        status = None
        if response.status_code == 200:
            try:
                status = parse_status(self.http.decode_json(response))
            except ControllerResponseError:
                status = None
        if status is None:
            raise NotAController(
                f"{self.base_url} is not a zerotier-one node: GET /status returned HTTP "
                f"{response.status_code} without a node address and version",
                hint="Set the controller URL to the zerotier-one local API (http://127.0.0.1:9993).",
            )
        return status

    def _check_controller(self, version: str) -> int | None:
        """Check that the node runs a controller; return its ``apiVersion`` when it states one."""
        response = self.http.send("GET", "/controller", kind="controller", allowed=(200, 404, 503))
        if response.status_code == 503:
            raise ControllerUnreachable(
                f"the controller at {self.base_url} is not ready: its database is still loading "
                f"(GET /controller returned HTTP 503 after {self.http.retries} retries)",
                hint="Try again in a minute; if it persists, check the zerotier-one log for database errors.",
            )
        if response.status_code == 404:
            # zerotier-one 1.12.1 has no GET /controller route but serves the rest of the
            # controller API, so a second path decides.
            networks = self.http.send("GET", "/controller/network", kind="network_list", allowed=(200, 404))
            if networks.status_code == 404:
                raise self._no_controller_error()
            return None

        body = self.http.decode_json(response)
        if not isinstance(body, Mapping) or body.get("controller") is not True:
            raise NotAController(
                f"zerotier-one {version} at {self.base_url} does not run a network controller: "
                f"GET /controller returned {body!r:.100}",
                hint=NO_CONTROLLER_HINT,
            )
        api_version = body.get("apiVersion")
        return api_version if isinstance(api_version, int) and not isinstance(api_version, bool) else None

    def _no_controller_error(self) -> NotAController:
        node = f"zerotier-one {self.version}" if self.version else "zerotier-one"
        return NotAController(
            f"{node} at {self.base_url} has no network controller: GET /controller/network returned "
            "HTTP 404. Default builds of zerotier-one 1.16.0 and later leave the controller out.",
            hint=NO_CONTROLLER_HINT,
        )

    # Reads

    def list_network_ids(self) -> list[str]:
        response = self.http.send("GET", "/controller/network", kind="network_list", allowed=(200, 404))
        if response.status_code == 404:
            # A build without the controller returns 404 on every /controller path: that is not
            # "no networks".
            raise self._no_controller_error()
        return parse_network_ids(self.http.decode_json(response), "GET /controller/network")

    def list_networks(self) -> dict[str, ControllerNetwork] | None:
        # Only 1.14.0 and later have the bulk network list; earlier servers are read network by network.
        if self.has_bulk_list is not True:
            return None
        return self.api.read_bulk_networks()

    def get_network(self, network_id: str) -> ControllerNetwork:
        return self.api.read_network(normalize_network_id(network_id))

    def get_member(self, network_id: str, node_id: str) -> ControllerMember | None:
        return self.api.read_member(normalize_network_id(network_id), normalize_node_id(node_id))

    def list_members(
        self,
        network_id: str,
        cached: Mapping[str, ControllerMember] | None = None,
    ) -> list[ControllerMember]:
        """Return every member of a network, sorted by node ID.

        Uses the bulk member list where the controller has it (1.14.0 and later). Otherwise reads
        the plain ``{node ID: revision}`` list and GETs each member that ``cached`` lacks at that
        revision, ``concurrency`` at a time.
        """
        network_id = normalize_network_id(network_id)
        members = None
        if self.has_bulk_list is not False:
            # Only a server known to have the bulk list must return it in the bulk-list shape.
            members = self.api.read_bulk_members(network_id, strict=self.has_bulk_list is True)
            if members is not None:
                self.has_bulk_list = True
        if members is None:
            members = self._list_members_by_revision(network_id, cached or {})
        return sorted(members, key=lambda member: member.node_id)

    def _list_members_by_revision(
        self, network_id: str, cached: Mapping[str, ControllerMember]
    ) -> list[ControllerMember]:
        revisions = self.api.read_member_revisions(network_id)
        if self.has_bulk_list is not False:
            # The network exists, so the bulk list that just failed is missing on this server.
            logger.debug("no bulk member list at %s; reading members one at a time", self.base_url)
            self.has_bulk_list = False

        cached_by_id = {node_id.lower(): member for node_id, member in cached.items()}
        members: list[ControllerMember] = []
        to_read: list[str] = []
        for node_id, revision in revisions.items():
            known = cached_by_id.get(node_id)
            if known is not None and known.network_id == network_id and known.revision == revision:
                members.append(known)
            else:
                to_read.append(node_id)
        members.extend(self._read_members(network_id, to_read))
        return members

    def _read_members(self, network_id: str, node_ids: list[str]) -> list[ControllerMember]:
        """GET members with at most ``concurrency`` requests in flight; skip those deleted meanwhile."""
        if not node_ids:
            return []
        members: list[ControllerMember] = []
        workers = min(self.concurrency, len(node_ids))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ztctl-member-get") as pool:
            futures = {
                pool.submit(self.api.read_member, network_id, node_id): node_id for node_id in node_ids
            }
            try:
                for future in as_completed(futures):
                    member = future.result()
                    if member is not None:
                        members.append(member)
                        continue
                    logger.info(
                        "member %s of network %s was deleted after the member list was read; skipping it",
                        futures[future],
                        network_id,
                    )
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
        return members

    # The requests behind the conditional writes of ConditionalWriteClient.

    def _read_member_once(self, network_id: str, node_id: str) -> ControllerMember | None:
        return self.api.read_member(network_id, node_id, retry=False)

    def _post_authorized_once(self, network_id: str, node_id: str, authorized: bool) -> ControllerMember:
        kind = "authorize" if authorized else "deauthorize"
        return self.api.post_member(network_id, node_id, {"authorized": authorized}, kind=kind)

    def _post_new_member_once(self, network_id: str, node_id: str, name: str | None) -> ControllerMember:
        body: dict[str, object] = {"authorized": True}
        if name:
            body["name"] = name
        return self.api.post_member(network_id, node_id, body, kind="authorize")

    def _before_create(self, network_id: str) -> None:
        # Before 1.14.0 a POST under a missing network stores a member of no
        # network, so check first; from 1.14.0 that POST gets a 404 instead.
        if self.has_bulk_list is not True:
            self.api.read_network(network_id, retry=False)

    def _delete_once(self, member: ControllerMember) -> ControllerMember:
        return self.api.delete_member(member)

    def _member_not_found(self, network_id: str, node_id: str, not_done: str) -> MemberNotFound:
        detail = f"GET {member_path(network_id, node_id)} returned HTTP 404"
        return self.api.member_not_found(network_id, node_id, not_done, detail)
