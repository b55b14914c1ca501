"""The engine: plans, actions, the five stages and reconcile.

The engine never prints and never exits. It raises ``ztctl.errors`` and
returns results; the CLI renders them and turns them into exit statuses.
"""

from ztctl.engine.job import Job, exit_code_for, open_job
from ztctl.engine.model import Mode, RunResult
from ztctl.engine.stages import diff, expire, reconcile, repair, sync, unknown

__all__ = [
    "Job",
    "Mode",
    "RunResult",
    "diff",
    "exit_code_for",
    "expire",
    "open_job",
    "reconcile",
    "repair",
    "sync",
    "unknown",
]
