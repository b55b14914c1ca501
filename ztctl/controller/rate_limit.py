"""Client-side request rate limiting for controllers that count requests per second.

ZeroTier Central allows 20 requests per second on free accounts and 100 on paid
ones. ``RateLimiter`` keeps every thread of one client under a configured rate,
and pauses them all when the server's rate-limit headers show the budget nearly
spent or a 429 response requests a wait. ``RateLimitedTransport`` applies it to
each request an ``httpx.Client`` sends, retries included.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
from pyrate_limiter import InMemoryBucket, Limiter, Rate

from ztctl.controller.http import MAX_RETRY_AFTER, parse_retry_after

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 1.0
"""The window that a rate counts requests in."""

ARRIVAL_MARGIN_MS = 100
"""Extra wait, in milliseconds, before a request that had to wait for the window is sent.

The server counts requests when they arrive, and two requests can take different times to get
there. The margin keeps a difference of up to 100 ms from putting one request too many into the
server's window."""

LIMIT_HEADER = "X-Ratelimit-Limit"
REMAINING_HEADER = "X-Ratelimit-Remaining"
RESET_HEADER = "X-Ratelimit-Reset"

_EPOCH_SECONDS_FROM = 1_000_000_000
"""A ``X-Ratelimit-Reset`` number at least this large is a Unix time, a smaller one a number of seconds."""

_ITEM_NAME = "request"


def window_rate(rate: float) -> Rate:
    """Convert requests per second to one pyrate-limiter ``Rate``; raise ``ValueError`` unless rate > 0.

    A rate of 1 or more is rounded down to whole requests per second, so that no window of one
    second ever contains more than ``rate`` requests. A rate below 1 allows one request per
    ``1 / rate`` seconds.
    """
    if not (isinstance(rate, int | float) and math.isfinite(rate) and rate > 0):
        raise ValueError(f"invalid rate {rate!r}: expected requests per second greater than 0")
    if rate >= 1:
        return Rate(math.floor(rate), int(WINDOW_SECONDS * 1000))
    return Rate(1, math.ceil(WINDOW_SECONDS * 1000 / rate))


def parse_reset(value: str | None, now: datetime | None = None) -> float | None:
    """Convert an ``X-Ratelimit-Reset`` value to seconds from now, capped at ``MAX_RETRY_AFTER``.

    Accepts an HTTP date (``Tue, 06 Aug 2024 20:53:48 UTC``), a Unix time in seconds, or a number
    of seconds. Returns None when the value is missing or cannot be parsed.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isdigit() and int(text) >= _EPOCH_SECONDS_FROM:
        seconds = int(text) - (now or datetime.now(UTC)).timestamp()
        return min(max(seconds, 0.0), MAX_RETRY_AFTER)
    return parse_retry_after(text, now)


def _header_int(headers: httpx.Headers, name: str) -> int | None:
    value = headers.get(name, "").strip()
    return int(value) if value.isdigit() else None


class RateLimiter:
    """A thread-safe blocking limiter: at most ``rate`` requests in any window of one second.

    ``acquire`` blocks until a request may be sent. ``observe`` reads each response:

    - on a 429, every thread pauses for the response's ``Retry-After`` (or until its
      ``X-Ratelimit-Reset``, or one window when it has neither);
    - when ``X-Ratelimit-Remaining`` is ``reserve`` or less, every thread pauses until
      ``X-Ratelimit-Reset`` (or one window). ``reserve`` covers the requests that other threads
      may already have in flight.

    A request after a pause still takes a slot of the window, so pauses only slow the client
    down. A pause is at most ``MAX_RETRY_AFTER`` seconds.
    """

    def __init__(
        self,
        rate: float,
        *,
        reserve: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if reserve < 0:
            raise ValueError(f"invalid reserve {reserve}: expected 0 or more")
        self.rate = rate
        self.reserve = reserve
        self._limiter = Limiter(InMemoryBucket([window_rate(rate)]), buffer_ms=ARRIVAL_MARGIN_MS)
        self._clock = clock
        self.sleep: Callable[[float], None] = time.sleep
        """Waits out a pause; tests replace it to record the pauses instead."""
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self.server_limit: int | None = None
        """The latest ``X-Ratelimit-Limit`` the server sent, if any."""
        self.pauses = 0
        self.paused_seconds = 0.0
        """Time spent waiting out pauses, summed over all threads."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rate={self.rate!r}, reserve={self.reserve})"

    def acquire(self) -> None:
        """Block until one more request may be sent."""
        while True:
            waited_until = self._wait_for_pause()
            if not self._limiter.try_acquire(_ITEM_NAME, blocking=True):
                raise RuntimeError(f"{self!r} cannot admit a single request")
            # A pause that began while this thread waited for the window must hold it too. The slot
            # it took is then wasted, which only makes the client slower.
            with self._lock:
                if self._paused_until <= waited_until:
                    return

    def pause(self, seconds: float, reason: str) -> None:
        """Hold every request for ``seconds`` (at most ``MAX_RETRY_AFTER``) from now."""
        seconds = min(max(seconds, 0.0), MAX_RETRY_AFTER)
        with self._lock:
            until = self._clock() + seconds
            if until <= self._paused_until:
                return
            self._paused_until = until
        logger.info("pausing controller requests for %.2f s: %s", seconds, reason)

    def observe(self, response: httpx.Response) -> None:
        """Read the rate-limit headers and status of a response, and pause when they ask for it."""
        headers = response.headers
        limit = _header_int(headers, LIMIT_HEADER)
        if limit is not None:
            self._note_server_limit(limit)
        reset = parse_reset(headers.get(RESET_HEADER))

        if response.status_code == 429:
            retry_after = parse_retry_after(headers.get("Retry-After"))
            wait = retry_after if retry_after is not None else reset
            self.pause(WINDOW_SECONDS if wait is None else wait, "the controller returned HTTP 429")
            return
        remaining = _header_int(headers, REMAINING_HEADER)
        if remaining is not None and remaining <= self.reserve:
            # A reset that has passed already points to a clock difference, so wait one window.
            self.pause(
                reset if reset else WINDOW_SECONDS, f"{remaining} requests left in the controller's window"
            )

    def close(self) -> None:
        self._limiter.close()

    def _wait_for_pause(self) -> float:
        """Sleep until the current pause ends, again if a response extends it meanwhile.

        Returns the end of the last pause waited out (or seen to be over), so that ``acquire``
        can tell a pause that starts later.
        """
        waited_until = 0.0
        while True:
            with self._lock:
                until = self._paused_until
            if until <= waited_until:
                return waited_until
            waited_until = until
            delay = until - self._clock()
            if delay > 0:
                self.sleep(delay)
                with self._lock:
                    self.pauses += 1
                    self.paused_seconds += delay

    def _note_server_limit(self, limit: int) -> None:
        with self._lock:
            changed = limit != self.server_limit
            self.server_limit = limit
        if changed and limit < self.rate:
            logger.warning(
                "the controller allows %d requests per second, fewer than the configured rate of %s; "
                "requests will pause whenever the controller's budget runs low",
                limit,
                self.rate,
            )


class RateLimitedTransport(httpx.BaseTransport):
    """A transport wrapper that waits for ``limiter`` before each request and shows it each response."""

    def __init__(self, inner: httpx.BaseTransport, limiter: RateLimiter) -> None:
        self._inner = inner
        self.limiter = limiter

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.limiter.acquire()
        response = self._inner.handle_request(request)
        self.limiter.observe(response)
        return response

    def close(self) -> None:
        self._inner.close()
        self.limiter.close()
