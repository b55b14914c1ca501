"""Build the ``httpx.Client`` for one controller, with the read-only choke point.

A read-only client gets ``ReadOnlyTransport`` under its ``httpx.Client``, so
every request of every backend passes the read-only check, and no write
method needs a check of its own.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from ztctl.errors import ReadOnlyViolation


class ReadOnlyTransport(httpx.BaseTransport):
    """A transport wrapper that raises ``ReadOnlyViolation`` for every request but GET, before sending it."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method != "GET":
            raise ReadOnlyViolation(
                f"read-only run: {request.method} {request.url.path} was not sent to the controller",
                hint="A dry run or audit must not change the controller; this is a bug in ztctl, "
                "please report it.",
            )
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def check_base_url(base_url: str) -> str:
    """Validate the controller URL and return it without a trailing slash; raise ``ValueError`` if invalid."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"invalid controller URL {base_url!r}: expected http:// or https:// and a host, "
            "such as http://127.0.0.1:9993"
        )
    # The URL appears in messages and logs, so it must not carry a secret. The message does not
    # repeat the URL for the same reason.
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError(
            "invalid controller URL: it must not contain user info, a query or a fragment; "
            "pass the token through the token setting instead"
        )
    return base_url.rstrip("/")


def build_http_client(
    base_url: str,
    headers: dict[str, str],
    *,
    read_only: bool,
    timeout: float,
    connect_timeout: float,
    concurrency: int,
    keepalive: bool,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """Build the client; ``transport`` replaces the network transport, as tests do.

    ``headers`` contains the authentication header, which httpx keeps out of the client's repr.
    Without ``keepalive`` every request carries ``Connection: close``.
    """
    if transport is None:
        limits = httpx.Limits(
            max_connections=concurrency,
            max_keepalive_connections=concurrency if keepalive else 0,
        )
        # retries=0 because HttpSession retries connection failures itself, with backoff and counting.
        transport = httpx.HTTPTransport(limits=limits, retries=0)
    if read_only:
        transport = ReadOnlyTransport(transport)

    client_headers = dict(headers)
    if not keepalive:
        client_headers["Connection"] = "close"
    return httpx.Client(
        base_url=base_url,
        headers=client_headers,
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        transport=transport,
        follow_redirects=False,
    )
