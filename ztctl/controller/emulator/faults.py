"""Failures that a test injects into the emulator: error statuses, resets, delays, cut bodies."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Fault:
    """A failure the emulator serves in place of, or on top of, its normal response.

    Build one with a factory method and pass it to ``ControllerEmulator.inject``:

    - ``Fault.status(code, body=b"", headers=None)`` responds with this status,
      body and headers instead of the real response, without running the request
      (for example 503, or 429 with ``{"Retry-After": "1"}``). A non-empty body
      gets no content type unless ``headers`` sets one.
    - ``Fault.reset()`` reads the request, then closes the connection with a
      TCP reset without responding. The request has no effect.
    - ``Fault.delay(seconds)`` waits, then responds normally.
    - ``Fault.truncate()`` runs the request (its changes are kept), then sends
      the status line and headers with the full ``Content-Length`` but only the
      first half of the body, and closes the connection. An empty body stays
      empty, so the response then arrives whole.
    - ``Fault.empty_body()`` runs the request (its changes are kept), then
      responds with its status and an empty body.
    - ``Fault.trickle(seconds)`` runs the request, then sends its body one byte
      at a time with ``seconds`` between bytes: each read is quick, the whole
      answer is not.

    ``emu.requests`` records a reset or truncated request with status 0.
    """

    kind: str
    status_code: int = 0
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0

    @classmethod
    def status(
        cls,
        code: int,
        body: bytes | str = b"",
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> Fault:
        if not 100 <= code <= 599:
            raise ValueError(f"invalid HTTP status {code}: expected 100 to 599")
        body_bytes = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
        return cls("status", status_code=code, body=body_bytes, headers=tuple((str(k), str(v)) for k, v in pairs))

    @classmethod
    def reset(cls) -> Fault:
        return cls("reset")

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        if seconds < 0:
            raise ValueError(f"invalid delay {seconds!r}: expected seconds >= 0")
        return cls("delay", seconds=float(seconds))

    @classmethod
    def truncate(cls) -> Fault:
        return cls("truncate")

    @classmethod
    def empty_body(cls) -> Fault:
        return cls("empty_body")

    @classmethod
    def trickle(cls, seconds: float) -> Fault:
        if seconds <= 0:
            raise ValueError(f"invalid trickle interval {seconds!r}: expected seconds > 0")
        return cls("trickle", seconds=float(seconds))


@dataclass(slots=True)
class _FaultRule:
    fault: Fault
    method: str | None
    path: re.Pattern[str] | None
    remaining: int

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        return self.path is None or self.path.fullmatch(path) is not None


class FaultQueue:
    """Injected faults in injection order; the first rule that matches a request fires."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[_FaultRule] = []

    def add(self, fault: Fault, *, method: str | None, path: str | None, times: int) -> None:
        if times < 1:
            raise ValueError(f"invalid times {times!r}: a fault must fire at least once")
        pattern = re.compile(path) if path is not None else None
        rule = _FaultRule(fault, method.upper() if method else None, pattern, times)
        with self._lock:
            self._rules.append(rule)

    def take(self, method: str, path: str) -> Fault | None:
        """Return the fault for this request, if any, and count it as fired once."""
        with self._lock:
            for index, rule in enumerate(self._rules):
                if rule.matches(method, path):
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        del self._rules[index]
                    return rule.fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
