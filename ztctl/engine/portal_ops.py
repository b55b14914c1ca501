"""Portal file load and dump, and schema upgrades: the commands that need no controller."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from ztctl.config import LoadedSettings
from ztctl.engine import portal_state
from ztctl.engine.job import open_job, run_owner
from ztctl.engine.model import Mode
from ztctl.errors import SafetyRefusal, UsageError, ZtctlError
from ztctl.portal.db import (
    WriteAccess,
    create_portal_engine,
    redact_url,
    upgrade_schema,
)
from ztctl.portal.lock import acquire_run_lock
from ztctl.portal.portal_file import (
    LoadPlan,
    apply_load,
    dump_portal,
    parse_portal_text,
    plan_load,
    render_portal,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadResult:
    source: str
    plan: LoadPlan
    applied: bool

    @property
    def counts(self) -> dict[str, int]:
        return asdict(self.plan.summary)

    def describe(self) -> str:
        """Summarise the changes in one line, naming only the kinds that changed."""
        changed = []
        for name, count in self.counts.items():
            if count:
                kind, verb = name.split("_")
                changed.append(f"{count} {kind.rstrip('s')}(s) {verb}")
        return ", ".join(changed) if changed else "no changes"


def load_portal_file(
    loaded: LoadedSettings, path: Path, *, mode: Mode, wait: float | None = None, force: bool = False
) -> LoadResult:
    """Validate a portal file and make the portal match it, all or nothing.

    In a dry run the changes are only planned. An audit is refused, because a
    load has nothing to audit. A file that would stop the portal managing
    every network it manages is refused unless ``force``: ztctl would then
    enforce nothing, which is how an empty or truncated file fails open.
    """
    if mode is Mode.AUDIT:
        raise UsageError("portal load does not support --audit", hint="use --dry-run to see what a load would change")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read portal file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"portal file {path} is not UTF-8 text: {exc}") from None
    document = parse_portal_text(text, source=str(path))
    job = open_job(loaded, command="portal load", mode=mode, needs_controller=False, wait=wait, create_database=True)
    try:
        with job.write_sessions() as session:
            now = job.now()
            plan = plan_load(session, document, now=now)
            _refuse_unmanaging_everything(session, plan, path, force=force)
            if mode is Mode.APPLY and plan.summary.total:
                apply_load(session, plan, now=now)
                session.commit()
                log.info("portal loaded from %s: %d change(s)", path, plan.summary.total)
        job.recorder.finish(0, asdict(plan.summary))
    except ZtctlError as exc:
        job.recorder.finish(exc.exit_code, {}, error=str(exc))
        raise
    finally:
        job.close()
    return LoadResult(str(path), plan, applied=mode is Mode.APPLY)


def _refuse_unmanaging_everything(session: Session, plan: LoadPlan, path: Path, *, force: bool) -> None:
    managed = len(portal_state.managed_networks(session, []))
    removed = plan.summary.networks_removed
    if managed == 0 or removed < managed:
        return
    message = f"portal file {path} would stop the portal managing all {managed} of its networks"
    if force:
        log.warning("%s; loading it anyway because of --force", message)
        return
    raise SafetyRefusal(
        message + ", after which ztctl would enforce nothing on them",
        hint="check that the file is complete; add --force if this is really meant",
    )


def dump_portal_text(loaded: LoadedSettings, fmt: str) -> str:
    job = open_job(loaded, command="portal dump", mode=Mode.DRY_RUN, needs_controller=False)
    try:
        with job.sessions() as session:
            return render_portal(dump_portal(session), fmt)
    finally:
        job.close()


@dataclass(frozen=True)
class UpgradeResult:
    database: str
    from_revision: str | None
    to_revision: str


def upgrade_database(loaded: LoadedSettings, *, mode: Mode, wait: float | None = None) -> UpgradeResult:
    """Create or upgrade the portal schema; the only command that alters it on purpose.

    It takes the run lock, so that no run works on a schema while it changes.
    """
    url = loaded.settings.database.url
    if mode is not Mode.APPLY:
        raise UsageError("db upgrade does not support --dry-run or --audit", hint="run it without them")
    engine = create_portal_engine(url, access=WriteAccess.ALL, create_sqlite_file=True)
    try:
        with acquire_run_lock(engine, wait=wait, owner=run_owner("db upgrade")):
            from_revision, to_revision = upgrade_schema(engine)
    finally:
        engine.dispose()
    return UpgradeResult(redact_url(url), from_revision, to_revision)
