"""Run one command in a fresh child process and measure its wall time, CPU time and peak memory."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
SPAWN_SCRIPT = Path(__file__).with_name("spawn.py")
OUTPUT_TAIL_CHARS = 2000
SPAWN_GRACE_SECONDS = 60
"""How long past the command's own timeout the harness waits for ``spawn.py`` before stopping it."""


@dataclass(frozen=True)
class ProcessResult:
    argv: tuple[str, ...]
    exit_code: int
    wall_seconds: float
    cpu_seconds: float
    """User plus system CPU time of the command."""
    max_rss_kib: int
    """Peak resident set size of the command, from ``wait4`` (kibibytes on Linux)."""
    stdout: str
    stderr: str
    timed_out: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "wall_seconds": round(self.wall_seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "max_rss_kib": self.max_rss_kib,
            "timed_out": self.timed_out,
            "stdout_tail": self.stdout[-OUTPUT_TAIL_CHARS:],
            "stderr_tail": self.stderr[-OUTPUT_TAIL_CHARS:],
        }


class CommandFailed(RuntimeError):
    """A set-up command that exited with a non-zero status."""


def run_measured(
    argv: Sequence[str], *, env: Mapping[str, str], timeout: float, cwd: Path = REPO_ROOT
) -> ProcessResult:
    """Run ``argv`` to completion through ``spawn.py`` and return its exit status, times, memory and output.

    The times and the peak memory are the command's own, measured by
    ``spawn.py`` with ``wait4``, so they leave out this process's memory and
    the start of the intermediate process.
    """
    with tempfile.TemporaryDirectory(prefix="ztctl-bench-run-") as directory:
        result_path = Path(directory) / "result.json"
        stdout_path, stderr_path = Path(directory) / "stdout", Path(directory) / "stderr"
        spawn_argv = [sys.executable, str(SPAWN_SCRIPT), str(result_path), str(timeout), *argv]
        with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
            spawner = subprocess.Popen(
                spawn_argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=dict(env), cwd=cwd
            )
            _wait(spawner, timeout + SPAWN_GRACE_SECONDS)
        output, errors = _read(stdout_path), _read(stderr_path)
        if spawner.returncode != 0 or not result_path.exists():
            raise RuntimeError(
                f"spawn.py failed with status {spawner.returncode} running {' '.join(argv)}: {errors[-2000:]}"
            )
        measured = json.loads(result_path.read_text(encoding="utf-8"))
    return ProcessResult(
        argv=tuple(argv),
        exit_code=measured["exit_code"],
        wall_seconds=measured["wall_seconds"],
        cpu_seconds=measured["cpu_seconds"],
        max_rss_kib=measured["max_rss_kib"],
        stdout=output,
        stderr=errors,
        timed_out=measured["timed_out"],
    )


def _wait(spawner: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for ``spawn.py``; on timeout or when this process is being stopped, stop it and its command."""
    try:
        spawner.wait(timeout)
    except BaseException:
        # spawn.py passes SIGTERM on to the command, then exits once the command has.
        spawner.send_signal(signal.SIGTERM)
        try:
            spawner.wait(30)
        except subprocess.TimeoutExpired:
            spawner.kill()
            spawner.wait()
        raise


def run_checked(argv: Sequence[str], *, env: Mapping[str, str], timeout: float = 3600) -> ProcessResult:
    """Run a set-up command; raise ``CommandFailed`` with its output if it exits non-zero."""
    result = run_measured(argv, env=env, timeout=timeout)
    if result.exit_code != 0:
        raise CommandFailed(
            f"{' '.join(argv)} exited with status {result.exit_code}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    return result


def python_module(module: str, *arguments: str) -> list[str]:
    """Return the argv that runs ``python -m module`` with this interpreter."""
    return [sys.executable, "-m", module, *arguments]


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


def stop_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit``, so that ``finally`` blocks stop emulators and drop databases."""

    def exit_now(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, exit_now)
