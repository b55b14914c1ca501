"""``ztctl demo``: the whole job over real HTTP against the built-in emulator.

It loads the sample portal into a temporary SQLite database, shows the drift,
runs ``reconcile``, and shows that a second diff finds nothing to change.
"""

from __future__ import annotations

import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.rule import Rule
from rich.text import Text

from ztctl.cli import jsonout
from ztctl.cli.options import CliOptions
from ztctl.cli.render import render_outcomes, render_plan, stdout_console
from ztctl.config import LoadedSettings
from ztctl.demo import ENGINEERING, UNMANAGED, DemoSetup, start_demo, write_demo_config
from ztctl.engine import Mode, RunResult, exit_code_for, open_job, stages
from ztctl.engine.portal_ops import load_portal_file
from ztctl.errors import ExitCode, UsageError
from ztctl.portal.models import utc_now


def run_demo(options: CliOptions, keep: Path | None = None) -> int:
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="ztctl-demo-") as workdir:
            return _demo(options, Path(workdir), keep=False)
    if keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
        raise UsageError(f"--keep {keep}: not an empty directory", hint="name a new or empty directory")
    keep.mkdir(parents=True, exist_ok=True)
    return _demo(options, keep.resolve(), keep=True)


def _demo(options: CliOptions, workdir: Path, *, keep: bool) -> int:
    console = stdout_console()
    documents: dict[str, Any] = {}
    setup = start_demo(workdir, utc_now())
    try:
        unmanaged_before = setup.emulator.members(UNMANAGED)
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
        if keep:
            _serve(setup, workdir)
        return code
    finally:
        setup.emulator.stop()


def _serve(setup: DemoSetup, workdir: Path) -> None:
    """Keep the emulator serving, with a config file for it, until Ctrl-C or SIGTERM."""
    config = write_demo_config(setup, workdir)
    console = stdout_console()
    console.print(Rule("the demo keeps running"))
    console.print(
        f"The emulator stays at {setup.emulator.url} and the portal in {workdir}. In another shell:\n\n"
        f"  export ZTCTL_CONFIG={config}\n"
        f"  ztctl explain {ENGINEERING} e5f6a7b8c9\n"
        f"  ztctl history --node b2c3d4e5f6\n"
        "  ztctl check\n\n"
        "Press Ctrl-C here to stop the emulator; the directory stays.",
        soft_wrap=True,
    )
    sys.stdout.flush()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        console.print("emulator stopped")


def _run(loaded: LoadedSettings, command: str, mode: Mode, action: Callable[..., RunResult]) -> RunResult:
    job = open_job(loaded, command=command, mode=mode)
    try:
        result = action(job)
        job.finish(result, exit_code_for(result))
        return result
    finally:
        job.close()
