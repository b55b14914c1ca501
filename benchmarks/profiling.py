"""Profile one command and write a plain-text summary of where its time went.

With py-spy, every thread is sampled, waiting included (``--idle``), so the
summary shows wall time. Without it, cProfile is used, and it profiles only
the main thread: time that ztctl spends in worker threads then shows up as
the main thread waiting on a lock.
"""

from __future__ import annotations

import pstats
import shutil
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from benchmarks.process import run_measured

PY_SPY_RATE = 200
"""Samples per second: enough for runs of a few seconds, and light enough not to slow them much."""
TOP_ROWS = 30


def find_py_spy(explicit: str | None) -> str | None:
    """Return the py-spy executable to use: ``explicit`` if given, else one on PATH, else None."""
    return explicit or shutil.which("py-spy")


def profile_command(
    argv: list[str], *, env: Mapping[str, str], output_stem: Path, timeout: float, py_spy: str | None
) -> Path:
    """Run ``argv`` under a profiler; write ``<stem>.txt`` (the summary) and the raw profile; return the summary."""
    output_stem.parent.mkdir(parents=True, exist_ok=True)
    summary = output_stem.with_suffix(".txt")
    if py_spy is not None:
        folded = output_stem.with_suffix(".folded")
        command = [py_spy, "record", "--idle", "--threads", "--rate", str(PY_SPY_RATE),
                   "--format", "raw", "--output", str(folded), "--", *argv]
        run_measured(command, env=env, timeout=timeout)
        summary.write_text(summarize_folded(folded.read_text(encoding="utf-8")), encoding="utf-8")
        return summary

    raw = output_stem.with_suffix(".prof")
    command = [sys.executable, "-m", "cProfile", "-o", str(raw), *_as_script_arguments(argv)]
    run_measured(command, env=env, timeout=timeout)
    with summary.open("w", encoding="utf-8") as stream:
        stream.write("cProfile, main thread only: time in worker threads shows as waiting on a lock.\n")
        statistics = pstats.Stats(str(raw), stream=stream).strip_dirs()
        statistics.sort_stats("cumulative").print_stats(TOP_ROWS)
        statistics.sort_stats("tottime").print_stats(TOP_ROWS)
    return summary


def _as_script_arguments(argv: list[str]) -> list[str]:
    """Drop the interpreter from a ``python -m module ...`` argv, so cProfile can run the rest."""
    if argv[:1] == [sys.executable]:
        return argv[1:]
    raise ValueError(f"cannot profile {argv[0]!r} with cProfile: expected {sys.executable} -m MODULE")


def summarize_folded(text: str) -> str:
    """Summarize py-spy's raw (collapsed stack) output: samples per function, inclusive and at the top of the stack.

    Each line is ``frame;frame;...;frame COUNT``, outermost frame first; with
    ``--threads`` the first frame names the thread.
    """
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        threads[frames[0]] += count
        leaf[frames[-1]] += count
        for frame in set(frames[1:]):
            inclusive[frame] += count
    lines = [f"py-spy samples: {total} at {PY_SPY_RATE} per second per thread, waiting included (--idle).", ""]
    lines += _table("Samples per thread", threads, total)
    lines += _table("Inclusive: samples with the function anywhere on the stack", inclusive, total)
    lines += _table("Self: samples with the function at the top of the stack", leaf, total)
    return "\n".join(lines) + "\n"


def _table(title: str, counts: Counter[str], total: int) -> list[str]:
    lines = [title, ""]
    for frame, count in counts.most_common(TOP_ROWS):
        lines.append(f"{count:8d} {100 * count / max(total, 1):5.1f}%  {frame}")
    return [*lines, ""]
