"""HTTP plumbing shared by the controller backends.

Every request a backend sends goes through ``HttpSession.send``, which counts
and logs it, retries transient failures with backoff and maps HTTP statuses to
the errors in ``ztctl.errors``. The read-only rule sits one level lower, in the
transport that ``ztctl.controller.http_client.build_http_client`` installs.
"""

from __future__ import annotations

import email.utils
import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import httpx
import tenacity

from ztctl.controller.base import RequestStats
from ztctl.errors import ControllerResponseError, ControllerUnreachable, TokenRejected
from ztctl.redact import redact

logger = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
"""Statuses that are retried: rate limiting, and a server or proxy that is briefly unavailable."""

MAX_RETRY_AFTER = 30.0
"""Maximum wait honoured from a ``Retry-After`` header, in seconds, because cron starts the next run
every 1 to 2 minutes."""

BODY_EXCERPT_CHARS = 200

MAX_RESPONSE_BYTES = 256 * 2**20
"""Largest response body read. A network of 100,000 members lists in about 70 MB on zerotier-one."""
# NOTE: the limits on a response bound the bytes of its body, not the memory
# of the parsed members, which is several times larger. A status line and
# headers sent a byte at a time are bounded only by the per-read timeout.

DEFAULT_RESPONSE_SECONDS = 10.0

# Backoff without a Retry-After header: 0.25 s doubled per retry, at most 8 s, plus up to 0.25 s
# of random jitter so that parallel requests do not retry in lockstep.
_backoff = tenacity.wait_exponential_jitter(multiplier=0.25, max=8.0, jitter=0.25)

# Failures after which the same request may succeed. RemoteProtocolError covers a kept-alive
# connection that the server closed: zerotier-one closes each connection after 5 requests.
_TRANSIENT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


@dataclass(frozen=True, slots=True)
class ErrorHints:
    """Backend-specific advice that ``HttpSession`` attaches to the errors it raises."""

    token_rejected: str
    unreachable: str


class TransientFailure(Exception):
    """A failure that a later attempt may not repeat: a network error or an HTTP 429, 502, 503 or 504.

    ``HttpSession`` retries on it and turns the last one into an error from ``ztctl.errors``,
    so it never leaves the session.
    """

    def __init__(
        self,
        method: str,
        path: str,
        *,
        error: httpx.HTTPError | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        super().__init__(f"{method} {path}")
        self.method = method
        self.path = path
        self.error = error
        self.response = response
        self.retry_after: float | None = None
        if response is not None:
            self.retry_after = parse_retry_after(response.headers.get("Retry-After"))

    @property
    def reason(self) -> str:
        if self.response is not None:
            return f"HTTP {self.response.status_code}"
        return describe_error(self.error)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Convert a ``Retry-After`` value, seconds or an HTTP date, to seconds capped at ``MAX_RETRY_AFTER``.

    Returns None when the header is missing or cannot be parsed.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def describe_error(error: BaseException | None) -> str:
    """Name an error by its class, and by its message when it has one."""
    if error is None:
        return "unknown error"
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def body_excerpt(response: httpx.Response) -> str:
    """Return the start of a response body on one line, or ``an empty body``.

    A server may quote the request's token back in an error body, so known
    secrets are removed before the excerpt reaches any message or record.
    """
    text = redact(" ".join(response.text.split()))
    if not text:
        return "an empty body"
    if len(text) > BODY_EXCERPT_CHARS:
        text = text[:BODY_EXCERPT_CHARS] + "..."
    return repr(text)


class HttpSession:
    """Send requests to one controller: count, log, retry, and map failures to ``ztctl.errors``."""

    def __init__(
        self,
        client: httpx.Client,
        *,
        base_url: str,
        stats: RequestStats,
        retries: int,
        token_source: str,
        hints: ErrorHints,
        max_in_flight: int = 4,
    ) -> None:
        self.client = client
        self.base_url = base_url
        self.stats = stats
        self.retries = retries
        self.token_source = token_source
        self.hints = hints
        self.sleep: Callable[[float], None] = time.sleep
        """Waits between retries; tests replace it to record the waits instead."""
        self.deadline: float | None = None
        """``time.monotonic()`` value after which no request is retried: the run's time limit."""
        self._stats_lock = threading.Lock()
        # Bounds the requests in flight across every thread of a run: the
        # engine works on several networks at once, and each may read members
        # in parallel, but the controller's HTTP server has a listen backlog of 5.
        self._in_flight = threading.BoundedSemaphore(max_in_flight)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, retries={self.retries})"

    def close(self) -> None:
        self.client.close()

    def send(
        self,
        method: str,
        path: str,
        *,
        kind: str,
        json: dict[str, object] | None = None,
        allowed: Collection[int] = (200,),
        retry: bool = True,
        network_id: str | None = None,
        node_id: str | None = None,
    ) -> httpx.Response:
        """Send one request and return its response when the status is in ``allowed``.

        Raises ``TokenRejected`` on 401 and ``ControllerResponseError`` on any other status.
        ``kind`` names the request in ``stats.by_kind``. With ``retry=False`` a transient failure
        propagates as ``TransientFailure``, for an operation that ``run_with_retries`` repeats
        as a whole.
        """
        if not retry:
            response = self._send_once(method, path, kind, json)
            return self._check_status(response, allowed, network_id, node_id)

        try:
            response = self._retry_loop(lambda _first_attempt: self._send_once(method, path, kind, json))
        except TransientFailure as failure:
            # A transient status that the caller handles, such as 503 on GET /controller, is
            # returned once the retries are used up.
            if failure.response is None or failure.response.status_code not in allowed:
                raise self._final_error(failure, network_id, node_id) from failure.error
            response = failure.response
        return self._check_status(response, allowed, network_id, node_id)

    def run_with_retries(self, operation: Callable[[bool], T]) -> T:
        """Run ``operation`` again after each transient failure, up to ``retries`` more times.

        ``operation`` receives True on its first attempt only, and sends its requests with
        ``retry=False`` so that it is retried as a whole.
        """
        try:
            return self._retry_loop(operation)
        except TransientFailure as failure:
            raise self._final_error(failure, None, None) from failure.error

    def decode_json(
        self, response: httpx.Response, *, network_id: str | None = None, node_id: str | None = None
    ) -> object:
        """Parse a response body as JSON; raise ``ControllerResponseError`` naming the request if invalid."""
        try:
            return response.json()
        except (ValueError, RecursionError):
            # RecursionError: arrays nested deeper than the JSON decoder can follow.
            request = response.request
            raise ControllerResponseError(
                f"{request.method} {request.url.path} returned a body that is not JSON: "
                f"{body_excerpt(response)}",
                status_code=response.status_code,
                network_id=network_id,
                node_id=node_id,
            ) from None

    def status_error(
        self,
        response: httpx.Response,
        *,
        network_id: str | None = None,
        node_id: str | None = None,
        attempts: int | None = None,
    ) -> ControllerResponseError:
        """Build the error for an unexpected status, naming the request and quoting the body's start."""
        request = response.request
        after = f" after {attempts} attempts" if attempts and attempts > 1 else ""
        return ControllerResponseError(
            f"{request.method} {request.url.path} returned HTTP {response.status_code}{after}: "
            f"{body_excerpt(response)}",
            status_code=response.status_code,
            network_id=network_id,
            node_id=node_id,
        )

    def _send_once(
        self, method: str, path: str, kind: str, json: dict[str, object] | None
    ) -> httpx.Response:
        started = time.perf_counter()
        try:
            with self._in_flight:
                response = self._receive(self.client.build_request(method, path, json=json))
        except httpx.HTTPError as error:
            self._count(kind)
            logger.debug(
                "%s %s failed after %.1f ms: %s", method, path, _ms_since(started), describe_error(error)
            )
            raise self._request_error(method, path, error) from error

        self._count(kind)
        logger.debug("%s %s -> %d in %.1f ms", method, path, response.status_code, _ms_since(started))
        if response.status_code in TRANSIENT_STATUSES:
            raise TransientFailure(method, path, response=response)
        return response

    def _receive(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and read its body within one timeout and one size limit, as a whole.

        httpx's read timeout applies to each read, so a server that sends a
        byte every few seconds would hold a run, and the run lock, forever.
        """
        limit = self.client.timeout.read or DEFAULT_RESPONSE_SECONDS
        response = self.client.send(request, stream=True)
        try:
            ends = time.monotonic() + limit
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_RESPONSE_BYTES:
                    raise httpx.DecodingError(
                        f"the response is larger than {MAX_RESPONSE_BYTES // 2**20} MiB", request=request
                    )
                if time.monotonic() > ends:
                    raise httpx.ReadTimeout(f"the response took longer than {limit:g}s to arrive", request=request)
        finally:
            response.close()
        headers = httpx.Headers(response.headers)
        # The body is decoded already.
        headers.pop("content-encoding", None)
        return httpx.Response(
            response.status_code, headers=headers, content=bytes(body), request=request,
            extensions=response.extensions,
        )

    def _request_error(self, method: str, path: str, error: httpx.HTTPError) -> Exception:
        """Choose what a failed request raises: retry it, or report it at once."""
        if isinstance(error, _TRANSIENT_ERRORS):
            return TransientFailure(method, path, error=error)
        if isinstance(error, httpx.TransportError):
            return ControllerUnreachable(
                f"cannot reach the controller at {self.base_url}: {method} {path} failed: "
                f"{describe_error(error)}",
                hint=self.hints.unreachable,
            )
        # For example a body that fails to decode: the server answered, so the answer is at fault.
        return ControllerResponseError(f"{method} {path} failed: {describe_error(error)}")

    def _check_status(
        self,
        response: httpx.Response,
        allowed: Collection[int],
        network_id: str | None,
        node_id: str | None,
    ) -> httpx.Response:
        if response.status_code in allowed:
            return response
        if response.status_code == 401:
            request = response.request
            raise TokenRejected(
                f"the controller at {self.base_url} rejected {self.token_source}: "
                f"{request.method} {request.url.path} returned HTTP 401",
                hint=self.hints.token_rejected,
            )
        raise self.status_error(response, network_id=network_id, node_id=node_id)

    def _retry_loop(self, operation: Callable[[bool], T]) -> T:
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retries + 1) | self._past_deadline,
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(TransientFailure),
            sleep=lambda seconds: self.sleep(seconds),
            before_sleep=self._note_retry,
            reraise=True,
        )
        result: T
        for attempt in retrying:
            with attempt:
                result = operation(attempt.retry_state.attempt_number == 1)
        return result

    def _final_error(
        self, failure: TransientFailure, network_id: str | None, node_id: str | None
    ) -> Exception:
        attempts = self.retries + 1
        if failure.response is not None:
            return self.status_error(
                failure.response, network_id=network_id, node_id=node_id, attempts=attempts
            )
        attempts_text = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        return ControllerUnreachable(
            f"cannot reach the controller at {self.base_url}: {failure.method} {failure.path} failed "
            f"after {attempts_text}: {failure.reason}",
            hint=self.hints.unreachable,
        )

    def _past_deadline(self, retry_state: tenacity.RetryCallState) -> bool:
        """Stop retrying when the wait before the next attempt would end past the run's deadline."""
        if self.deadline is None:
            return False
        upcoming = retry_state.upcoming_sleep or 0.0
        if time.monotonic() + upcoming < self.deadline:
            return False
        logger.warning("not retrying: the run's time limit is reached")
        return True

    def _wait(self, retry_state: tenacity.RetryCallState) -> float:
        failure = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(failure, TransientFailure) and failure.retry_after is not None:
            return failure.retry_after
        return _backoff(retry_state)

    def _note_retry(self, retry_state: tenacity.RetryCallState) -> None:
        with self._stats_lock:
            self.stats.retries += 1
        failure = retry_state.outcome.exception() if retry_state.outcome else None
        if not isinstance(failure, TransientFailure):
            return
        delay = retry_state.next_action.sleep if retry_state.next_action else 0.0
        logger.info(
            "retrying after %s on %s %s: retry %d of %d in %.2f s",
            failure.reason,
            failure.method,
            failure.path,
            retry_state.attempt_number,
            self.retries,
            delay,
        )

    def _count(self, kind: str) -> None:
        # Member reads run in worker threads, and Counter updates are not atomic.
        with self._stats_lock:
            self.stats.by_kind[kind] += 1


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
