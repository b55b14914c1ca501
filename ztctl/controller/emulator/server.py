"""The emulator's HTTP/1.1 server, built on the standard library's ``http.server``.

It reproduces the connection handling of ``zerotier-one``'s local API
(cpp-httplib 0.15 defaults): every response carries
``Keep-Alive: timeout=5, max=5`` except the fifth on a connection, which
carries ``Connection: close`` before the server closes it, and a connection
left idle for 5 seconds is closed. It also applies injected faults and keeps a
log of every request served.
"""

from __future__ import annotations

import itertools
import json
import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from urllib.parse import unquote, urlsplit

from .faults import FaultQueue
from .routes import JSON_CONTENT_TYPE, ControllerApi, Response

logger = logging.getLogger(__name__)

KEEP_ALIVE_TIMEOUT_SECONDS = 5
KEEP_ALIVE_MAX_REQUESTS = 5
_KEEP_ALIVE_HEADER = f"timeout={KEEP_ALIVE_TIMEOUT_SECONDS}, max={KEEP_ALIVE_MAX_REQUESTS}"
_MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the emulator served, with the status it sent (0 after a reset or truncation)."""

    method: str
    path: str
    """The path without the query string, as sent (not percent-decoded)."""
    status: int
    body: bytes
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    """Request headers with lower-case names; they include the token as sent."""
    connection_id: int = 0
    """Number of the TCP connection that carried the request, counted from 1 in order of acceptance."""
    connection_request_number: int = 0
    """The request's position on its connection, from 1."""


class RequestLog:
    """Thread-safe list of ``RecordedRequest`` in the order the responses were sent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []

    def append(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def snapshot(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()


class EmulatorHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that tracks its open connections, so that ``stop`` can close them."""

    daemon_threads = True

    def __init__(
        self,
        host: str,
        port: int,
        api: ControllerApi,
        faults: FaultQueue,
        request_log: RequestLog,
        reused_connection_delay: float,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.api = api
        self.faults = faults
        self.request_log = request_log
        self.reused_connection_delay = reused_connection_delay
        self._connections: dict[socket.socket, int] = {}
        self._connections_lock = threading.Lock()
        self._connection_ids = itertools.count(1)
        super().__init__((host, port), _EmulatorRequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name with getfqdn, which can
        # wait on DNS; the emulator only needs the bound port.
        TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def track_connection(self, connection: socket.socket) -> int:
        with self._connections_lock:
            connection_id = next(self._connection_ids)
            self._connections[connection] = connection_id
            return connection_id

    def forget_connection(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.pop(connection, None)

    def close_open_connections(self) -> None:
        """Shut down every open connection, so that handler threads blocked on a read return."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the peer


class _EmulatorRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = KEEP_ALIVE_TIMEOUT_SECONDS
    """Socket read timeout: an idle keep-alive connection is closed after this many seconds."""
    disable_nagle_algorithm = True
    """Set TCP_NODELAY. Headers and body go out in two writes, and with Nagle's
    algorithm the client's delayed ACK would add about 40 ms to every request
    on a reused connection. ``reused_connection_delay`` imitates that on purpose."""
    server: EmulatorHTTPServer

    def setup(self) -> None:
        super().setup()
        self.requests_on_connection = 0
        self.connection_id = self.server.track_connection(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.forget_connection(self.connection)

    def do_GET(self) -> None:  # noqa: N802 (method names are fixed by BaseHTTPRequestHandler)
        self._serve()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET  # noqa: N815

    def _serve(self) -> None:
        self.requests_on_connection += 1
        target = urlsplit(self.path)
        body = self._read_body()
        if body is None:
            self._record(target.path, target.query, b"", 400)
            return
        path = unquote(target.path)
        fault = self.server.faults.take(self.command, path)

        # Each branch logs the request before it writes anything, so that a
        # client that has its response also finds the request in the log.
        if fault is not None and fault.kind == "reset":
            self._record(target.path, target.query, body, 0)
            self._reset_connection()
            return
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.seconds)
        if self.server.reused_connection_delay > 0 and self.requests_on_connection > 1:
            time.sleep(self.server.reused_connection_delay)

        if fault is not None and fault.kind == "status":
            response = Response(fault.status_code, fault.body, None, fault.headers)
        else:
            response = self._handle(path, target.query, body)
        if fault is not None and fault.kind == "empty_body":
            response = Response(response.status, b"", None, ())
        truncate = fault is not None and fault.kind == "truncate"
        self._record(target.path, target.query, body, 0 if truncate else response.status)
        logger.debug("emulator %s %s -> %d", self.command, path, response.status)
        trickle = fault.seconds if fault is not None and fault.kind == "trickle" else 0.0
        self._send(response, truncate=truncate, trickle=trickle)

    def _handle(self, path: str, query: str, body: bytes) -> Response:
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            return self.server.api.handle(self.command, path, query, headers, body)
        except Exception as error:
            # Like the real server's exception handler: 500 with a JSON description.
            logger.exception("emulator failed on %s %s", self.command, path)
            description = json.dumps(f"{type(error).__name__}: {error}")
            text = f'{{"error": 500, "description": {description}}}'
            return Response(500, text.encode("utf-8"), JSON_CONTENT_TYPE)

    def _read_body(self) -> bytes | None:
        """Read the request body; on a malformed length, send 400 and return ``None``."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            try:
                return self._read_chunked_body()
            except ValueError:
                self.send_error(400, explain="invalid chunk size in a chunked body")
                return None
        length_text = self.headers.get("Content-Length", "0")
        try:
            length = int(length_text)
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_BODY_BYTES:
            self.send_error(400, explain=f"invalid Content-Length {length_text!r}")
            return None
        return self.rfile.read(length)

    def _read_chunked_body(self) -> bytes:
        chunks = []
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                # Skip trailer lines up to the blank line that ends the body.
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def _send(self, response: Response, *, truncate: bool, trickle: float = 0.0) -> None:
        closing = self.close_connection or self.requests_on_connection >= KEEP_ALIVE_MAX_REQUESTS
        # send_response_only, unlike send_response, adds no Server or Date
        # header; the real controller sends neither.
        self.send_response_only(response.status)
        self.send_header("Content-Length", str(len(response.body)))
        if response.content_type is not None:
            self.send_header("Content-Type", response.content_type)
        for name, value in response.headers:
            self.send_header(name, value)
        if closing:
            self.send_header("Connection", "close")
        else:
            self.send_header("Keep-Alive", _KEEP_ALIVE_HEADER)
        self.end_headers()

        if self.command == "HEAD":
            return
        if truncate:
            self.wfile.write(response.body[: len(response.body) // 2])
            self.close_connection = True
            return
        if trickle:
            try:
                for index in range(len(response.body)):
                    self.wfile.write(response.body[index : index + 1])
                    self.wfile.flush()
                    time.sleep(trickle)
            except OSError:
                self.close_connection = True  # the client gave up, as it should
            return
        self.wfile.write(response.body)

    def _reset_connection(self) -> None:
        # SO_LINGER with a zero timeout makes close() send a TCP RST.
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass  # the client went away first

    def _record(self, path: str, query: str, body: bytes, status: int) -> None:
        self.server.request_log.append(
            RecordedRequest(
                method=self.command,
                path=path,
                status=status,
                body=body,
                query=query,
                headers={name.lower(): value for name, value in self.headers.items()},
                connection_id=self.connection_id,
                connection_request_number=self.requests_on_connection,
            )
        )

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (name fixed by the base class)
        # The base class writes to stderr; route its notes (timeouts, bad requests)
        # to logging. A malformed request line can carry ?auth=<token>, so redact it.
        message = self.server.api.redact_token(format % args)
        logger.debug("emulator connection %d: %s", self.connection_id, message)
