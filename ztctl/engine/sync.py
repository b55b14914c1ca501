"""The sync stage: read each managed network's members from the controller.

A network is read once per run, and what a later stage needs from it is
planned right away, so a run keeps one network's members in memory at a
time per worker, not every network's. In apply mode the cache (``zerotier_memberships``)
is rewritten to match, and only the rows that changed are written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ztctl.controller.base import ControllerMember, ControllerNetwork
from ztctl.engine import portal_state
from ztctl.engine.job import Job
from ztctl.engine.model import NetworkReport, StageResult
from ztctl.errors import ControllerResponseError, ControllerUnreachable, NetworkNotFound

log = logging.getLogger(__name__)

STAGE = "sync"


@dataclass(frozen=True)
class NetworkSnapshot:
    """One managed network as read from the controller, or the error that prevented reading it."""

    network_id: str
    portal_name: str
    network: ControllerNetwork | None = None
    members: tuple[ControllerMember, ...] = ()
    error: str | None = None
    read_in_full: bool = True
    """False when the client may have reused cached members instead of reading them."""


def managed_networks(job: Job) -> list[tuple[str, str]]:
    """Return the ID and portal name of every network the portal manages."""
    with job.sessions() as session:
        networks = [(network.id, network.name) for network in portal_state.managed_networks(session, job.problems)]
    if not networks:
        log.warning("the portal manages no network, so nothing was checked; load one with `ztctl portal load`")
    return networks


def prefetch_networks(job: Job) -> dict[str, ControllerNetwork] | None:
    """Read every network in one request where the controller allows it; None means read them one by one."""
    try:
        return job.require_controller().list_networks()
    except (ControllerResponseError, ControllerUnreachable) as exc:
        # Each network's own read then fails or succeeds on its own, and the
        # run reports what it did before the failure.
        log.warning("reading all networks at once failed, so each is read on its own: %s", exc)
        return None


def sync_network(
    job: Job,
    network_id: str,
    portal_name: str,
    *,
    write_cache: bool,
    known: dict[str, ControllerNetwork] | None = None,
) -> tuple[NetworkReport, NetworkSnapshot]:
    """Read one network, write its cache when asked (only counting in a read-only run), and report it.

    ``known`` contains the networks that ``prefetch_networks`` read, which saves a request per network.
    """
    snapshot = read_network(job, network_id, portal_name, known)
    report = NetworkReport(network_id, name=portal_name)
    if snapshot.error is not None:
        report.error = snapshot.error
        report.counts.errors += 1
        return report, snapshot
    assert snapshot.network is not None
    report.name = snapshot.network.name or portal_name
    report.private = snapshot.network.private
    report.member_count = len(snapshot.members)
    report.counts.networks_processed += 1
    if write_cache:
        report.cache_changes = _write_cache(job, snapshot, dry_run=job.mode.is_read_only)
    return report, snapshot


def run_sync(job: Job) -> StageResult:
    """Read every managed network and write the cache; the ``sync`` command."""
    from ztctl.engine.workers import for_each_network

    result = StageResult(STAGE, job.mode, job.now())
    known = prefetch_networks(job)
    reports = for_each_network(
        job, managed_networks(job), lambda nw, name: sync_network(job, nw, name, write_cache=True, known=known)[0]
    )
    for report in reports:
        result.add(report)
    return result


def read_network(
    job: Job, network_id: str, portal_name: str, known: dict[str, ControllerNetwork] | None = None
) -> NetworkSnapshot:
    """Read one network and its members; a per-network failure becomes the snapshot's error."""
    client = job.require_controller()
    mismatch = _foreign_network(job, network_id)
    if mismatch is not None:
        log.error("%s", mismatch)
        return NetworkSnapshot(network_id, portal_name, error=mismatch)
    try:
        if known is None:
            network = client.get_network(network_id)
        elif network_id in known:
            network = known[network_id]
        else:
            raise NetworkNotFound(f"network {network_id} is not in the controller's network list", network_id=network_id)
        cached, reusable = _cache(job, network_id)
        members = client.list_members(network_id, reusable)
    except NetworkNotFound:
        error = (
            f"network {network_id} is managed in the portal but not on the controller; "
            "nothing was changed on it"
        )
        log.error("%s", error, extra={"network": network_id})
        return NetworkSnapshot(network_id, portal_name, error=error)
    except (ControllerResponseError, ControllerUnreachable) as exc:
        # The controller responded to the probe at the start of the run, so going
        # away now fails this network, and the run reports what it did so far.
        log.error("reading network %s failed: %s", network_id, exc, extra={"network": network_id})
        return NetworkSnapshot(network_id, portal_name, error=f"reading the network failed: {exc}")
    log.debug("network %s: %d members read", network_id, len(members))
    job.guard.observe(network_id, members, sum(1 for member in cached.values() if member.authorized))
    reused = any(reusable.get(member.node_id) is member for member in members)
    return NetworkSnapshot(network_id, portal_name, network, tuple(members), read_in_full=not reused)


def _cache(job: Job, network_id: str) -> tuple[dict[str, ControllerMember], dict[str, ControllerMember]]:
    """Return the network's cached members, and those a client may reuse by revision.

    A member deleted and then created anew can come back with a revision the
    cache already holds, so reuse by revision alone could keep a stale
    "deauthorized" forever. Once ``controller.cache_max_age`` has passed since
    the last full read, nothing is reused, which bounds how long such a
    mistake can last.
    """
    with job.sessions() as session:
        cached = portal_state.cached_members(session, network_id)
        read_at = portal_state.members_read_at(session, network_id)
    if read_at is None or job.now() - read_at >= job.settings.controller.cache_max_age:
        return cached, {}
    return cached, cached


def reusable_cache(job: Job, network_id: str) -> dict[str, ControllerMember]:
    """Return the cached members a client may reuse by revision (see ``_cache``)."""
    return _cache(job, network_id)[1]


def _foreign_network(job: Job, network_id: str) -> str | None:
    """Say why a network cannot belong to this controller, or return None.

    A zerotier-one controller serves only networks whose ID starts with its
    own node address. A managed network with another prefix means ztctl is
    pointed at the wrong controller, so nothing on it may be changed.
    """
    status = job.controller_status
    if status is None or status.backend != "zerotier-one" or network_id.startswith(status.address):
        return None
    return (
        f"network {network_id} cannot belong to the controller at {job.settings.controller.url}, whose "
        f"node address is {status.address}: a network ID starts with its controller's address. "
        "Nothing was changed on it; check controller.url"
    )


def _write_cache(job: Job, snapshot: NetworkSnapshot, *, dry_run: bool) -> int:
    """Write (or in a read-only run, only count) the network's cache changes; return how many rows."""
    assert snapshot.network is not None
    # Restarting the cache's age at half its maximum keeps a full read in
    # time while an unchanged network's row is rewritten only now and then.
    refresh_after = job.settings.controller.cache_max_age / 2
    members = list(snapshot.members)
    now = job.now()
    # Count first in a read transaction, and take SQLite's write lock only
    # for a network that has something to write: most have nothing.
    with job.sessions() as session:
        changes = portal_state.write_network_cache(session, snapshot.network, members, now, dry_run=True)
        stale = snapshot.read_in_full and portal_state.network_row_is_stale(session, snapshot.network_id, now, refresh_after)
    if not dry_run and (changes.total or stale):
        with job.write_sessions() as session:
            changes = portal_state.write_network_cache(
                session, snapshot.network, members, now,
                read_in_full=snapshot.read_in_full, refresh_after=refresh_after,
            )
            session.commit()
    if changes.total:
        log.debug(
            "cache of network %s: %d inserted, %d updated, %d deleted%s",
            snapshot.network_id, changes.inserted, changes.updated, changes.deleted,
            " (not written: read-only run)" if dry_run else "",
        )
    return changes.total
