"""The mass-revocation guard: an empty or broken portal must not cut everyone off.

Per network and per run, the guard refuses to deauthorize or delete more than
``max_share`` of the network's members, counted over every stage of the run,
once the count passes ``min_count``. It also refuses when the portal has no
active membership for a network that had ``min_count`` or more authorized
members at the last sync. A refused network gets no change at all in this
run, and the run exits 7, unless ``--force`` was given.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from ztctl.config import RevocationGuardSettings
from ztctl.controller.base import ControllerMember
from ztctl.engine.model import ActionKind, Finding

log = logging.getLogger(__name__)


@dataclass
class _NetworkCount:
    authorized: int
    """Authorized members when the run first read the network."""
    members: int
    cached_authorized: int
    """Authorized members in the cache before this run wrote to it."""
    deauthorized: int = 0
    deleted: int = 0
    refusal: str | None = None


class RevocationGuard:
    def __init__(self, settings: RevocationGuardSettings, *, force: bool) -> None:
        self.settings = settings
        self.force = force
        self._networks: dict[str, _NetworkCount] = {}

    def observe(self, network_id: str, members: Sequence[ControllerMember], cached_authorized: int) -> None:
        """Record the network's size the first time the run reads it; later reads do not move the baseline."""
        if network_id not in self._networks:
            authorized = sum(1 for member in members if member.authorized)
            self._networks[network_id] = _NetworkCount(authorized, len(members), cached_authorized)

    def review(self, network_id: str, findings: Sequence[Finding], *, active_memberships: int) -> str | None:
        """Return why the planned actions on a network are refused, or None to let them go ahead.

        A refusal sticks for the rest of the run, so a later stage cannot do
        what an earlier one was refused.
        """
        count = self._networks.get(network_id)
        if count is None:
            return None
        if count.refusal is None:
            count.refusal = self._judge(count, findings, active_memberships)
            # Logged when first made, not again by each later stage it holds for.
            if count.refusal is not None and self.force:
                log.warning("network %s: %s; applying anyway because of --force", network_id, count.refusal)
            elif count.refusal is not None:
                log.error("network %s: refused: %s; nothing was changed on it", network_id, count.refusal)
        return None if self.force else count.refusal

    def record(self, network_id: str, finding: Finding) -> None:
        """Count an applied action against the network's budget."""
        count = self._networks.get(network_id)
        if count is None:
            return
        if finding.revokes_access:
            count.deauthorized += 1
        if finding.action is ActionKind.DELETE:
            count.deleted += 1

    def _judge(self, count: _NetworkCount, findings: Sequence[Finding], active_memberships: int) -> str | None:
        limit = self.settings
        planned_revocations = sum(1 for finding in findings if finding.revokes_access)
        if planned_revocations and active_memberships == 0:
            had = max(count.cached_authorized, count.authorized)
            if had >= limit.min_count:
                return (
                    f"the portal has no active membership for this network, which had {had} authorized "
                    "members; refusing to deauthorize them all (was the portal emptied by mistake?)"
                )
        deauthorized = count.deauthorized + planned_revocations
        if deauthorized > limit.min_count and deauthorized > limit.max_share * count.authorized:
            return (
                f"would deauthorize {deauthorized} of {count.authorized} authorized members in this run, "
                f"more than the limit of {limit.max_share:.0%} (policies.revocation_guard)"
            )
        deleted = count.deleted + sum(1 for finding in findings if finding.action is ActionKind.DELETE)
        if deleted > limit.min_count and deleted > limit.max_share * count.members:
            return (
                f"would delete {deleted} of {count.members} members in this run, "
                f"more than the limit of {limit.max_share:.0%} (policies.revocation_guard)"
            )
        return None
