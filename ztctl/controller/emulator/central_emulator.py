"""``CentralEmulator``: a loopback HTTP server that behaves like ZeroTier Central API v1.

It has the Python API of ``ControllerEmulator`` (networks, members, joins,
recorded requests, injected faults) and serves Central's paths under a base
path such as ``/api/v1``. Its responses follow the published OpenAPI
specification of Central API v1, which a test checks.

NOTE: the HTTP server is the one of the self-hosted emulator, so a connection
carries at most 5 requests before the server closes it, as zerotier-one does.
Central's own limit is not documented.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from .central_records import CENTRAL_VERSION, InvalidMemberBody
from .central_routes import CentralRoutes, RequestRateWindow
from .central_state import CentralState
from .controller_emulator import generate_token
from .faults import Fault, FaultQueue
from .server import EmulatorHTTPServer, RecordedRequest, RequestLog
from .state import validate_network_id, validate_node_id

logger = logging.getLogger(__name__)

DEFAULT_BASE_PATH = "/api/v1"
DEFAULT_RATE_LIMIT = 20
"""Requests per second: Central's documented limit for a free account."""
DEFAULT_PHYSICAL_ADDRESS = "203.0.113.10"
"""The address a joining device reports by default, from a range reserved for documentation (RFC 5737)."""


class CentralEmulator:
    """An emulated ZeroTier Central account, served on a loopback port.

    ``rate_limit`` is the requests per second admitted before the server returns 429 with
    ``Retry-After`` and ``X-Ratelimit-*`` headers (None for no limit). ``read_only_token=True``
    makes every POST and DELETE return 403; ``token_can_write`` changes it while running.

    The Python methods change the same state as the HTTP API, with the same
    revision and time rules, and may be called before ``start()``. Members are
    returned as served, in Central's shape: ``authorized`` is in ``config``.
    """

    def __init__(
        self,
        token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        base_path: str = DEFAULT_BASE_PATH,
        rate_limit: int | None = DEFAULT_RATE_LIMIT,
        read_only_token: bool = False,
        version: str = CENTRAL_VERSION,
    ) -> None:
        if not _is_loopback(host):
            raise ValueError(
                f"invalid host {host!r}: the emulator serves on a loopback address only, such as 127.0.0.1"
            )
        if not base_path.startswith("/") or base_path.endswith("/"):
            raise ValueError(f"invalid base path {base_path!r}: expected a path such as /api/v1")
        self.token = token if token is not None else generate_token()
        """The API token; a random one when none is given."""
        self.host = host
        self.base_path = base_path
        self._requested_port = port
        self._state = CentralState()
        self._rate_window = RequestRateWindow(rate_limit)
        self._routes = CentralRoutes(
            self._state, self.token, base_path=base_path, version=version, rate_window=self._rate_window
        )
        self._routes.token_can_write = not read_only_token
        self._faults = FaultQueue()
        self._request_log = RequestLog()
        self._server: EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle

    def start(self) -> CentralEmulator:
        """Bind to ``host`` and serve in a daemon thread; return ``self``."""
        if self._server is not None:
            raise RuntimeError(f"emulator already running at {self.url}: call stop() first")
        # The server calls only handle() and redact_token(), which CentralRoutes provides.
        server = EmulatorHTTPServer(
            self.host,
            self._requested_port,
            self._routes,
            self._faults,
            self._request_log,
            0.0,  # type: ignore[arg-type]
        )
        self._routes.port = server.server_port
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"ztctl-central-emulator-{server.server_port}",
            daemon=True,
        )
        self._thread.start()
        logger.info("Central emulator started at %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving and close open connections; does nothing if not running."""
        server, thread = self._server, self._thread
        if server is None:
            return
        url = self.url
        server.shutdown()
        server.close_open_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None
        logger.info("Central emulator at %s stopped", url)

    def __enter__(self) -> CentralEmulator:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._running_server().server_port

    @property
    def url(self) -> str:
        """The API base URL, such as ``http://127.0.0.1:40123/api/v1`` (IPv6 hosts in brackets)."""
        server = self._running_server()
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{server.server_port}{self.base_path}"

    @property
    def token_can_write(self) -> bool:
        return self._routes.token_can_write

    @token_can_write.setter
    def token_can_write(self, value: bool) -> None:
        self._routes.token_can_write = value

    @property
    def rate_limit(self) -> int | None:
        return self._rate_window.limit

    def member_path(self, network_id: str, node_id: str) -> str:
        """Return the served path of a member, for ``inject(path=...)``."""
        return f"{self.base_path}/network/{network_id}/member/{node_id}"

    def _running_server(self) -> EmulatorHTTPServer:
        if self._server is None:
            raise RuntimeError("emulator not running: call start() first")
        return self._server

    # State

    def create_network(self, network_id: str | None = None, *, name: str = "", private: bool = True) -> str:
        """Create a network (or rename it and set ``private``, if it exists) and return its ID.

        ``None`` picks a random ID.
        """
        if network_id is not None:
            validate_network_id(network_id)
        return self._state.create_network(network_id, name, private)

    def delete_network(self, network_id: str) -> None:
        """Delete a network and its members; ``KeyError`` if unknown."""
        validate_network_id(network_id)
        if not self._state.delete_network(network_id):
            raise KeyError(f"network {network_id} not found")

    def put_member(
        self,
        network_id: str,
        node_id: str,
        *,
        authorized: bool | None = None,
        active_bridge: bool | None = None,
        name: str | None = None,
        ip_assignments: Iterable[str] | None = None,
        created_at_ms: int | None = None,
        last_seen_ms: int | None = None,
        physical_address: str | None = None,
    ) -> dict[str, Any]:
        """Upsert a member like a POST with the given fields; ``None`` leaves a field as it is.

        ``created_at_ms`` sets ``config.creationTime``, and ``last_seen_ms`` and
        ``physical_address`` the contact data, which no HTTP request can. Returns
        the member as served. Raises ``KeyError`` for an unknown network and
        ``ValueError`` for an invalid ID or field value.
        """
        validate_network_id(network_id)
        validate_node_id(node_id)
        if not self._state.has_network(network_id):
            raise KeyError(f"network {network_id} not found: create it with create_network() first")
        config: dict[str, Any] = {"authorized": authorized, "activeBridge": active_bridge}
        if ip_assignments is not None:
            config["ipAssignments"] = list(ip_assignments)
        contact: dict[str, Any] = {}
        if last_seen_ms is not None:
            contact.update(lastSeen=last_seen_ms, lastOnline=last_seen_ms)
        if physical_address is not None:
            contact["physicalAddress"] = physical_address
        try:
            member = self._state.post_member(
                network_id,
                node_id,
                {"name": name, "config": config},
                creation_time_ms=created_at_ms,
                contact=contact,
            )
        except InvalidMemberBody as error:
            raise ValueError(f"invalid member fields for {node_id}: {error}") from error
        assert member is not None  # the network exists, checked above
        return member

    def simulate_join(
        self, network_id: str, node_id: str, *, physical_address: str = DEFAULT_PHYSICAL_ADDRESS
    ) -> dict[str, Any]:
        """Apply a device's join attempt and return its member (see ``CentralState.simulate_join``)."""
        validate_network_id(network_id)
        validate_node_id(node_id)
        return self._state.simulate_join(network_id, node_id, physical_address)

    def get_member(self, network_id: str, node_id: str) -> dict[str, Any] | None:
        """Return the member as served, looked up in any case; None if it or its network is missing."""
        validate_network_id(network_id)
        validate_node_id(node_id)
        return self._state.get_member(network_id, node_id)

    def members(self, network_id: str) -> dict[str, dict[str, Any]]:
        """Return every member as served, keyed by ``nodeId``; ``KeyError`` for an unknown network."""
        validate_network_id(network_id)
        members = self._state.list_members(network_id)
        if members is None:
            raise KeyError(f"network {network_id} not found")
        return {member["nodeId"]: member for member in members}

    def network_ids(self) -> list[str]:
        return self._state.network_ids()

    # Requests and faults

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request served so far, faulted ones included, in the order the responses were sent."""
        return self._request_log.snapshot()

    @property
    def request_times(self) -> list[float]:
        """``time.monotonic()`` at the arrival of each request that reached the API, in arrival order.

        Requests that an injected ``Fault.status`` or ``Fault.reset`` replaced are not included.
        """
        return self._rate_window.arrivals()

    def clear_requests(self) -> None:
        """Forget the recorded requests and their arrival times; the rate-limit window is kept."""
        self._request_log.clear()
        self._rate_window.clear_arrivals()

    def inject(
        self, fault: Fault, *, method: str | None = None, path: str | None = None, times: int = 1
    ) -> None:
        """Serve ``fault`` on the next ``times`` requests that match (see ``ControllerEmulator.inject``).

        ``path`` is matched against the whole served path, base path included.
        """
        self._faults.add(fault, method=method, path=path, times=times)

    def clear_faults(self) -> None:
        self._faults.clear()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
