"""``ControllerEmulator``: a loopback HTTP server that behaves like ``zerotier-one``'s controller."""

from __future__ import annotations

import logging
import secrets
import string
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from .faults import Fault, FaultQueue
from .flavour import ApiFlavour
from .jsonvalues import InvalidBody
from .routes import ControllerApi
from .server import EmulatorHTTPServer, RecordedRequest, RequestLog
from .state import ControllerState, validate_network_id, validate_node_id

logger = logging.getLogger(__name__)

DEFAULT_ADDRESS = "3233204505"
DEFAULT_VERSION = "1.14.1"
_TOKEN_ALPHABET = string.ascii_lowercase + string.digits


def generate_token() -> str:
    """Return 24 characters from ``[a-z0-9]``, the form ``zerotier-one`` writes to ``authtoken.secret``."""
    return "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(24))


class ControllerEmulator:
    """An emulated ``zerotier-one`` node with its network controller, served on a loopback port.

    ``version`` selects the API behaviour of that release (see ``ApiFlavour``);
    ``has_controller=False`` emulates a 1.16 default build, where only
    ``/status`` works and every controller path is a 404. With
    ``reused_connection_delay`` > 0 every request after the first on a
    kept-alive connection waits that many seconds before its response,
    which imitates the slow reused connections of a real controller.

    The Python methods change the same state as the HTTP API, with the same
    revision and time rules, and may be called before ``start()``.
    """

    def __init__(
        self,
        token: str | None = None,
        address: str = DEFAULT_ADDRESS,
        version: str = DEFAULT_VERSION,
        host: str = "127.0.0.1",
        port: int = 0,
        has_controller: bool = True,
        reused_connection_delay: float = 0.0,
    ) -> None:
        if reused_connection_delay < 0:
            raise ValueError(f"invalid reused_connection_delay {reused_connection_delay!r}: expected seconds >= 0")
        self.token = token if token is not None else generate_token()
        """The API token; a random one of the real form when none is given."""
        self.flavour = ApiFlavour.from_version(version, has_controller=has_controller)
        self.host = host
        self.reused_connection_delay = reused_connection_delay
        self._requested_port = port
        self._state = ControllerState(address, self.flavour)
        self._api = ControllerApi(self._state, self.flavour, self.token)
        self._faults = FaultQueue()
        self._request_log = RequestLog()
        self._server: EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle

    def start(self) -> ControllerEmulator:
        """Bind to ``host`` and serve in a daemon thread; return ``self``."""
        if self._server is not None:
            raise RuntimeError(f"emulator already running at {self.url}: call stop() first")
        server = EmulatorHTTPServer(
            self.host,
            self._requested_port,
            self._api,
            self._faults,
            self._request_log,
            self.reused_connection_delay,
        )
        self._api.port = server.server_port
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"ztctl-emulator-{server.server_port}",
            daemon=True,
        )
        self._thread.start()
        logger.info("controller emulator %s started at %s", self.flavour.version, self.url)
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
        logger.info("controller emulator at %s stopped", url)

    def __enter__(self) -> ControllerEmulator:
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
        """The base URL, such as ``http://127.0.0.1:40123`` (IPv6 hosts in brackets)."""
        server = self._running_server()
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{server.server_port}"

    @property
    def address(self) -> str:
        """The node address: every network created under it starts with these 10 hex digits."""
        return self._state.address

    @property
    def version(self) -> str:
        return self.flavour.version

    def _running_server(self) -> EmulatorHTTPServer:
        if self._server is None:
            raise RuntimeError("emulator not running: call start() first")
        return self._server

    # State

    def create_network(self, network_id: str | None = None, *, name: str = "", private: bool = True) -> str:
        """Create a network (or update it, if ``network_id`` exists) and return its ID.

        ``None`` picks a random suffix under the node address, like
        ``POST /controller/network/<address>______``.
        """
        fields = {"name": name, "private": private}
        if network_id is None:
            network = self._state.create_random_network(fields)
            if network is None:
                raise RuntimeError(f"no free network ID left under address {self.address}")
            return network["id"]
        validate_network_id(network_id)
        return self._state.post_network(network_id, fields)["id"]

    def delete_network(self, network_id: str) -> None:
        """Delete a network like ``DELETE /controller/network/<nwid>``; ``KeyError`` if unknown."""
        validate_network_id(network_id)
        if self._state.delete_network(network_id) is None:
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
    ) -> dict[str, Any]:
        """Upsert a member like a POST with the given fields; ``None`` leaves a field as it is.

        IDs are stored as typed, like the HTTP path. ``name`` is ignored before
        1.14.0, as the real controller does. ``created_at_ms`` sets
        ``creationTime``, which no HTTP request can do. Returns the member as
        served. Raises ``KeyError`` for an unknown network and ``ValueError``
        for an invalid ID or a non-string IP address.
        """
        validate_network_id(network_id)
        validate_node_id(node_id)
        if not self._state.has_network(network_id):
            raise KeyError(f"network {network_id} not found: create it with create_network() first")
        fields: dict[str, Any] = {}
        if authorized is not None:
            fields["authorized"] = authorized
        if active_bridge is not None:
            fields["activeBridge"] = active_bridge
        if name is not None:
            fields["name"] = name
        if ip_assignments is not None:
            fields["ipAssignments"] = list(ip_assignments)
        try:
            member = self._state.post_member(network_id, node_id, fields, creation_time_ms=created_at_ms)
        except InvalidBody as error:
            raise ValueError(f"invalid member fields for {node_id}: {error.description}") from error
        assert member is not None  # the network exists, checked above
        return member

    def simulate_join(self, network_id: str, node_id: str) -> dict[str, Any]:
        """Apply a device's join attempt and return its member record (see ``ControllerState.simulate_join``)."""
        validate_network_id(network_id)
        validate_node_id(node_id)
        return self._state.simulate_join(network_id, node_id)

    def get_member(self, network_id: str, node_id: str) -> dict[str, Any] | None:
        """Return the member as served, looked up in any case; ``None`` if it or its network is missing."""
        validate_network_id(network_id)
        validate_node_id(node_id)
        return self._state.get_member(network_id, node_id)

    def members(self, network_id: str) -> dict[str, dict[str, Any]]:
        """Return every member keyed by its ``id`` as served; ``KeyError`` for an unknown network."""
        validate_network_id(network_id)
        members = self._state.list_members(network_id)
        if members is None:
            raise KeyError(f"network {network_id} not found")
        return {member["id"]: member for member in members}

    def network_ids(self) -> list[str]:
        return self._state.network_ids()

    # Requests and faults

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request served so far, faulted ones included, in the order the responses were sent."""
        return self._request_log.snapshot()

    def clear_requests(self) -> None:
        self._request_log.clear()

    def inject(self, fault: Fault, *, method: str | None = None, path: str | None = None, times: int = 1) -> None:
        """Serve ``fault`` on the next ``times`` requests that match.

        ``method`` (any case) and ``path`` (a regular expression matched
        against the whole path, without the query) narrow the match; ``None``
        matches anything. When several injected faults match, the earliest fires.
        """
        self._faults.add(fault, method=method, path=path, times=times)

    def clear_faults(self) -> None:
        self._faults.clear()
