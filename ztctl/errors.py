"""The exception tree and the exit codes.

Every error that ztctl raises on purpose derives from ``ZtctlError`` and
carries the exit code that the CLI turns it into::

    ZtctlError
    ├── UsageError              2  bad option, argument or portal file
    │   └── PortalFileError
    ├── ConfigError             3  config file, token or database URL
    │   └── DatabaseError          database unreachable or schema not current
    ├── ControllerError         4  the controller as a whole cannot be used
    │   ├── ControllerUnreachable
    │   ├── NotAController
    │   ├── TokenRejected
    │   └── ControllerResponseError  one request failed (a per-network error)
    │       ├── NetworkNotFound
    │       ├── MemberNotFound
    │       └── MemberChanged    the member moved on since the plan was made
    ├── PortalUnavailable       5  the portal database failed in the middle of a run
    ├── UnreadableTime          5  a portal row holds a time that cannot be read
    ├── ReadOnlyViolation       5  a write attempted in a read-only run (a bug)
    ├── LockHeld                6
    ├── SafetyRefusal           7
    └── Interrupted           130  Ctrl-C or SIGTERM

The engine raises these and never exits; only the CLI maps them to a message
and an exit status.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit statuses, in the style of ``diff(1)`` and ``kubectl diff``."""

    OK = 0
    CHANGES_PENDING = 1
    USAGE = 2
    CONFIG = 3
    CONTROLLER = 4
    PARTIAL_FAILURE = 5
    LOCK_HELD = 6
    REFUSED = 7
    INTERRUPTED = 130


class ZtctlError(Exception):
    """Base of every error that ztctl raises on purpose.

    ``hint`` tells the operator what to do next; the CLI prints it after the
    message.
    """

    exit_code: ExitCode = ExitCode.PARTIAL_FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(ZtctlError):
    exit_code = ExitCode.USAGE


class PortalFileError(UsageError):
    """A portal file that cannot be loaded; ``problems`` lists every entry at fault."""

    def __init__(self, message: str, problems: list[str], *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.problems = problems

    def __str__(self) -> str:
        return "\n".join([self.message, *(f"  - {problem}" for problem in self.problems)])


class UnreadableTime(ZtctlError):
    """A time in the portal database that cannot be read, such as text written into an SQLite column.

    Raised while rows load; the engine confines it to the network or
    membership the row belongs to.
    """

    def __init__(self, quoted_value: str) -> None:
        """``quoted_value`` is the stored value as a repr, already cut to a readable length."""
        super().__init__(
            f"the portal database contains the time {quoted_value}, which cannot be read",
            hint="write it as YYYY-MM-DD HH:MM:SS in UTC, or end the row",
        )


class ConfigError(ZtctlError):
    exit_code = ExitCode.CONFIG


class DatabaseError(ConfigError):
    """The portal database is unreachable, missing, or its schema is not current."""


class ControllerError(ZtctlError):
    exit_code = ExitCode.CONTROLLER


class ControllerUnreachable(ControllerError):
    """No HTTP answer from the controller after the allowed retries."""


class NotAController(ControllerError):
    """The server answers, but it is not a ZeroTier controller (or has no controller built in)."""


class TokenRejected(ControllerError):
    """The controller answered 401 to the configured token."""


class ControllerResponseError(ControllerError):
    """One controller request failed or returned something ztctl cannot use.

    Raised for a single network or member; the engine records it and goes on
    with the rest, so on its own it ends a run with exit status 5.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        network_id: str | None = None,
        node_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status_code = status_code
        self.network_id = network_id
        self.node_id = node_id


class NetworkNotFound(ControllerResponseError):
    """The controller has no network with this ID (HTTP 404)."""


class MemberNotFound(ControllerResponseError):
    """The network has no member with this node ID (HTTP 404)."""


class MemberChanged(ControllerResponseError):
    """The member is not in the state the plan was made from, so the write was not sent.

    ``current`` is the member as read just now, when the change is a new revision.
    """

    current: object | None = None


class PortalUnavailable(ZtctlError):
    """The portal database failed after the run started; what was done so far is in the log."""


class ReadOnlyViolation(ZtctlError):
    """A write was attempted in a dry run or audit; the choke point stopped it."""


class LockHeld(ZtctlError):
    exit_code = ExitCode.LOCK_HELD


class SafetyRefusal(ZtctlError):
    exit_code = ExitCode.REFUSED


class Interrupted(ZtctlError):
    exit_code = ExitCode.INTERRUPTED
