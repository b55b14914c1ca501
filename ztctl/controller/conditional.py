"""Conditional writes, the same for every backend.

A write re-reads the member first. It raises ``MemberNotFound`` rather than
send a POST to a missing member (the controller would create it), and
``MemberChanged`` when the member's revision moved since the plan. It sends
nothing when the member is already in the state asked for. A write is
retried as a whole, and once a POST or DELETE may have gone out, the
member's state decides whether it took effect, not its revision.

A backend supplies the requests themselves through the ``_…_once`` methods.
"""

from __future__ import annotations

from abc import abstractmethod

from ztctl.controller.base import ControllerClient, ControllerMember
from ztctl.controller.http import HttpSession
from ztctl.controller.zerotier_one_records import (
    normalize_network_id,
    normalize_node_id,
)
from ztctl.errors import ControllerResponseError, MemberChanged, MemberNotFound


class WriteAttempts:
    """What the earlier attempts of one conditional write did, for the attempt that retries it."""

    def __init__(self) -> None:
        self.sent = False
        """Whether a POST or DELETE went out, so it may have changed the member already."""
        self.last_read: ControllerMember | None = None


class ConditionalWriteClient(ControllerClient):
    """A ``ControllerClient`` whose writes follow the conditional-write rules above."""

    http: HttpSession

    # The requests a backend sends, each once and without retrying.

    @abstractmethod
    def _read_member_once(self, network_id: str, node_id: str) -> ControllerMember | None:
        """GET a member; None on a 404."""

    @abstractmethod
    def _post_authorized_once(self, network_id: str, node_id: str, authorized: bool) -> ControllerMember:
        """POST ``authorized`` to an existing member and return it as stored."""

    @abstractmethod
    def _post_new_member_once(self, network_id: str, node_id: str, name: str | None) -> ControllerMember:
        """POST a new, authorized member and return it as stored."""

    @abstractmethod
    def _delete_once(self, member: ControllerMember) -> ControllerMember:
        """DELETE a member and return its last state."""

    @abstractmethod
    def _member_not_found(self, network_id: str, node_id: str, not_done: str) -> MemberNotFound:
        """Build the error for a member the re-read did not find; ``not_done`` is a past participle."""

    def _before_create(self, network_id: str) -> None:
        """Check what a backend must check before creating a member; by default nothing."""

    # The writes of the interface.

    def authorize_member(
        self,
        network_id: str,
        node_id: str,
        *,
        expected_revision: int | None = None,
        create: bool = False,
        name: str | None = None,
    ) -> ControllerMember:
        """Set ``authorized`` to true; ``name`` is sent only with ``create=True``."""
        network_id = normalize_network_id(network_id)
        node_id = normalize_node_id(node_id)
        attempts = WriteAttempts()
        if create:
            return self.http.run_with_retries(lambda _first: self._create(network_id, node_id, name, attempts))
        return self.http.run_with_retries(
            lambda _first: self._set_authorized(network_id, node_id, True, expected_revision, attempts)
        )

    def deauthorize_member(
        self, network_id: str, node_id: str, *, expected_revision: int | None = None
    ) -> ControllerMember:
        network_id = normalize_network_id(network_id)
        node_id = normalize_node_id(node_id)
        attempts = WriteAttempts()
        return self.http.run_with_retries(
            lambda _first: self._set_authorized(network_id, node_id, False, expected_revision, attempts)
        )

    def delete_member(
        self, network_id: str, node_id: str, *, expected_revision: int | None = None
    ) -> ControllerMember:
        network_id = normalize_network_id(network_id)
        node_id = normalize_node_id(node_id)
        attempts = WriteAttempts()

        def attempt(_first: bool) -> ControllerMember:
            current = self._read_member_once(network_id, node_id)
            if current is None and attempts.last_read is not None:
                # An earlier attempt sent the DELETE before its connection broke, and it took effect.
                return attempts.last_read
            current = self._require_member(current, network_id, node_id, "deleted")
            if not attempts.sent:
                _check_revision(current, expected_revision, "deleted")
            attempts.last_read = current
            attempts.sent = True
            return self._delete_once(current)

        return self.http.run_with_retries(attempt)

    def _set_authorized(
        self,
        network_id: str,
        node_id: str,
        authorized: bool,
        expected_revision: int | None,
        attempts: WriteAttempts,
    ) -> ControllerMember:
        action = "authorize" if authorized else "deauthorize"
        current = self._read_member_once(network_id, node_id)
        current = self._require_member(current, network_id, node_id, f"{action}d")
        # Until a POST has gone out, every attempt checks the revision. After
        # one, this client's own POST may have landed before the connection
        # broke and moved the revision, so the member's state decides instead.
        if not attempts.sent:
            _check_revision(current, expected_revision, f"{action}d")
            if expected_revision is not None and current.authorized is authorized:
                # The plan saw this revision in the other state, or it would not
                # have asked for this write: the list and this read disagree.
                raise ControllerResponseError(
                    f"member {node_id} of network {network_id} is {action}d at revision {current.revision}, "
                    f"but the member list showed the other state at that revision: the controller's answers "
                    "contradict each other, so the member was not changed",
                    network_id=network_id,
                    node_id=node_id,
                )
        if current.authorized is authorized:
            return current
        attempts.sent = True
        return self._post_authorized_once(network_id, node_id, authorized)

    def _create(self, network_id: str, node_id: str, name: str | None, attempts: WriteAttempts) -> ControllerMember:
        current = self._read_member_once(network_id, node_id)
        if current is not None:
            if attempts.sent and current.authorized:
                # This client's POST from an earlier attempt created it.
                return current
            raise MemberChanged(
                f"member {node_id} of network {network_id} already exists (revision {current.revision}), "
                "so it was not created",
                network_id=network_id,
                node_id=node_id,
                hint="Run again to plan from the controller's current state.",
            )
        self._before_create(network_id)
        attempts.sent = True
        return self._post_new_member_once(network_id, node_id, name)

    def _require_member(
        self, member: ControllerMember | None, network_id: str, node_id: str, not_done: str
    ) -> ControllerMember:
        if member is None:
            raise self._member_not_found(network_id, node_id, not_done)
        return member


def _check_revision(member: ControllerMember, expected_revision: int | None, not_done: str) -> None:
    if expected_revision is None or member.revision == expected_revision:
        return
    changed = MemberChanged(
        f"member {member.node_id} of network {member.network_id} is at revision {member.revision}, "
        f"not the expected {expected_revision}, so it was not {not_done}",
        network_id=member.network_id,
        node_id=member.node_id,
        hint="The member changed after the plan was made; run again to plan from its current state.",
    )
    changed.current = member
    raise changed
