"""Portal file load and dump, and schema upgrades: the commands that need no controller."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from ztctl.config import LoadedSettings
from ztctl.engine.job import open_job
from ztctl.engine.model import Mode
from ztctl.errors import UsageError
from ztctl.portal.db import WriteAccess, create_portal_engine, redact_url, upgrade_schema
from ztctl.portal.portal_file import LoadPlan, apply_load, dump_portal, parse_portal_text, plan_load, render_portal

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


def load_portal_file(loaded: LoadedSettings, path: Path, *, mode: Mode) -> LoadResult:
    """Validate a portal file and make the portal match it, all or nothing.

    In a dry run the changes are only planned. An audit is refused, because a
    load has nothing to audit.
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
    job = open_job(loaded, command="portal load", mode=mode, needs_controller=False)
    try:
        with job.sessions() as session:
            now = job.now()
            plan = plan_load(session, document, now=now)
            if mode is Mode.APPLY and plan.summary.total:
                apply_load(session, plan, now=now)
                session.commit()
                log.info("portal loaded from %s: %d change(s)", path, plan.summary.total)
        job.recorder.finish(0, asdict(plan.summary))
    finally:
        job.close()
    return LoadResult(str(path), plan, applied=mode is Mode.APPLY)


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


def upgrade_database(loaded: LoadedSettings, *, mode: Mode) -> UpgradeResult:
    """Create or upgrade the portal schema; the only command that alters it on purpose."""
    url = loaded.settings.database.url
    if mode is not Mode.APPLY:
        raise UsageError("db upgrade does not support --dry-run or --audit", hint="run it without them")
    engine = create_portal_engine(url, access=WriteAccess.ALL, create_sqlite_file=True)
    try:
        from_revision, to_revision = upgrade_schema(engine)
    finally:
        engine.dispose()
    return UpgradeResult(redact_url(url), from_revision, to_revision)
