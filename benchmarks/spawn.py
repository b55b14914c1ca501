"""Run one command as this process's only child; write its exit status, times and peak memory as JSON.

The harness starts every measured command through this small process, because
on Linux a child's peak memory (``ru_maxrss``) starts at its parent's peak
when the child is forked. The harness keeps a whole emulated controller in
memory, so its children would report at least its size, while this process
uses about 10 MiB.
It uses the standard library only and is run as a script, not imported::

    python benchmarks/spawn.py RESULT_FILE TIMEOUT_SECONDS COMMAND [ARGUMENT ...]

SIGTERM and SIGINT are passed on to the command. After TIMEOUT_SECONDS the
command gets SIGKILL and the result contains ``"timed_out": true``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time


def main() -> int:
    if len(sys.argv) < 4:
        sys.stderr.write(__doc__ or "")
        return 2
    result_path, timeout, argv = sys.argv[1], float(sys.argv[2]), sys.argv[3:]

    start = time.perf_counter()
    child = subprocess.Popen(argv)
    # A pidfd names this child even after it is reaped, so a late signal cannot reach a reused PID.
    pidfd = os.pidfd_open(child.pid)
    timed_out = threading.Event()

    def send(signum: int) -> None:
        try:
            signal.pidfd_send_signal(pidfd, signum)
        except ProcessLookupError:
            pass  # it has just exited

    def kill_on_timeout() -> None:
        timed_out.set()
        send(signal.SIGKILL)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda received, _frame: send(received))
    timer = threading.Timer(timeout, kill_on_timeout)
    timer.start()
    _, status, usage = os.wait4(child.pid, 0)
    wall_seconds = time.perf_counter() - start
    timer.cancel()
    os.close(pidfd)

    result = {
        "exit_code": os.waitstatus_to_exitcode(status),
        "wall_seconds": wall_seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "max_rss_kib": usage.ru_maxrss,
        "timed_out": timed_out.is_set(),
    }
    with open(result_path, "w", encoding="utf-8") as stream:
        json.dump(result, stream)
    return 0


if __name__ == "__main__":
    sys.exit(main())
