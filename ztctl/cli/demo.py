"""``ztctl demo``: the whole job over real HTTP against the built-in emulator.

It loads the sample portal into a temporary SQLite database, shows the drift,
runs ``reconcile``, and shows that a second diff finds nothing to change.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.rule import Rule
from rich.text import Text

from ztctl.cli import jsonout
from ztctl.cli.options import CliOptions
from ztctl.cli.render import render_outcomes, render_plan, stdout_console
from ztctl.config import LoadedSettings
from ztctl.demo import UNMANAGED, start_demo
from ztctl.engine import Mode, RunResult, exit_code_for, open_job, stages
from ztctl.engine.portal_ops import load_portal_file
from ztctl.errors import ExitCode
from ztctl.portal.models import utc_now


def run_demo(options: CliOptions) -> int:
    console = stdout_console()
    documents: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ztctl-demo-") as workdir:
        setup = start_demo(Path(workdir), utc_now())
        unmanaged_before = setup.emulator.members(UNMANAGED)
        try:
            loaded = setup.settings
            if not options.is_json:
                console.print(Rule("ztctl demo"))
                console.print(f"controller emulator at {setup.emulator.url}; portal database in {workdir}")
            load = load_portal_file(loaded, setup.portal_file, mode=Mode.APPLY)
            documents["load"] = load.counts

            steps: list[tuple[str, str, Mode, Callable[..., RunResult]]] = [
                ("before", "1. ztctl diff: what differs between the portal and the controller", Mode.DRY_RUN, stages.diff),
                ("reconcile", "2. ztctl reconcile: expire, sync, repair, unknown", Mode.APPLY, stages.reconcile),
                ("after", "3. ztctl diff again: nothing left to repair", Mode.DRY_RUN, stages.diff),
            ]
            results = {}
            for key, title, mode, command in steps:
                result = _run(loaded, command.__name__, mode, command)
                results[key] = result
                documents[key] = jsonout.run_document(result, exit_code_for(result))
                if not options.is_json:
                    console.print(Rule(title))
                    if mode is Mode.APPLY:
                        render_outcomes(console, result, always_summary=True)
                    else:
                        render_plan(console, result)
            untouched = setup.emulator.members(UNMANAGED) == unmanaged_before
        finally:
            setup.emulator.stop()

    converged = (
        exit_code_for(results["after"]) is ExitCode.OK
        and exit_code_for(results["reconcile"]) is ExitCode.OK
        and untouched
    )
    code = int(ExitCode.OK if converged else ExitCode.PARTIAL_FAILURE)
    if options.is_json:
        document = jsonout.base_document("demo", "apply", code)
        document.update(documents)
        jsonout.emit(document)
    elif converged:
        console.print(Rule("the controller now matches the portal; the unmanaged network was not touched"))
    else:
        console.print(Rule(Text("the demo did not converge: see the output above", style="red")))
    return code


def _run(loaded: LoadedSettings, command: str, mode: Mode, action: Callable[..., RunResult]) -> RunResult:
    job = open_job(loaded, command=command, mode=mode)
    try:
        result = action(job)
        job.finish(result, exit_code_for(result))
        return result
    finally:
        job.close()
