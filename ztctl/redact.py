"""Keep secrets out of logs and messages.

Secrets are meant never to reach a log line or a message in the first place;
this is the second line of defence. Every secret ztctl reads (the controller
token, a database password) is registered here, and the CLI's log handler and
error printer replace any registered value with ``***``.

Matching ignores letter case, because a server may echo a token back in upper
case. A secret of ``SUBSTRING_MIN_LENGTH`` characters or more is replaced
wherever it occurs, even inside a longer word. A shorter one is replaced only
where no letter, digit or underscore touches it, because replaced everywhere,
a two-letter password would turn "service" into "***rvice" and tell a reader
which letters it has.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Iterable

_lock = threading.Lock()
_secrets: set[str] = set()

SUBSTRING_MIN_LENGTH = 4
"""Length from which a secret is replaced inside longer words too."""

MASK = "***"


def register_secret(value: str | None) -> None:
    if value:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """Replace every registered secret in ``text`` with ``***``."""
    with _lock:
        secrets = frozenset(_secrets)
    return mask_secrets(text, secrets)


def mask_secrets(text: str, secrets: Iterable[str | None]) -> str:
    """Replace each of ``secrets`` in ``text`` with ``***``, by the rules of ``redact``, without registering them."""
    chosen = frozenset(secret for secret in secrets if secret)
    if not chosen:
        return text
    return _secrets_pattern(chosen).sub(MASK, text)


@functools.lru_cache(maxsize=32)
def _secrets_pattern(secrets: frozenset[str]) -> re.Pattern[str]:
    # Longest first, so that a secret that contains another is replaced whole.
    ordered = sorted(secrets, key=lambda secret: (-len(secret), secret))
    return re.compile("|".join(map(_secret_pattern, ordered)), re.IGNORECASE)


def _secret_pattern(secret: str) -> str:
    escaped = re.escape(secret)
    if len(secret) >= SUBSTRING_MIN_LENGTH:
        return escaped
    # Not next to a letter, digit or underscore, so that a password such as
    # "." or "se" leaves "127.0.0.1" and "service" alone.
    return rf"(?<!\w){escaped}(?!\w)"


class RedactingFilter(logging.Filter):
    """A logging filter that redacts registered secrets from the formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True
