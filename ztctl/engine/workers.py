"""Run per-network work on a few threads at once.

Networks are independent, so a run works on up to ``controller.concurrency``
of them at a time; the controller client bounds the requests in flight by
the same number. Results come back in the order of the networks, whatever
order they finish in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import TypeVar

from ztctl.engine.job import Job

log = logging.getLogger(__name__)

T = TypeVar("T")


def for_each_network(job: Job, networks: list[tuple[str, str]], work: Callable[[str, str], T]) -> list[T]:
    """Call ``work(network_id, portal_name)`` for every network and return the results in order.

    The first exception stops the networks not yet started and is raised once
    the running ones finish, so no network is left half done. An interrupt
    does the same, after asking the running ones to stop between actions.
    """
    workers = max(1, min(job.settings.controller.concurrency, len(networks)))
    total = len(networks)
    if workers == 1:
        results = []
        for done, (network_id, name) in enumerate(networks, start=1):
            results.append(work(network_id, name))
            job.report_progress(done, total)
        return results

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ztctl-network")
    futures: list[Future[T]] = []
    try:
        futures = [pool.submit(work, network_id, name) for network_id, name in networks]
        for future in futures:
            future.add_done_callback(lambda _: job.report_progress(sum(f.done() for f in futures), total))
        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((future for future in finished if future.exception() is not None), None)
        if failed is not None:
            pool.shutdown(wait=True, cancel_futures=True)
            raise failed.exception()  # type: ignore[misc]
        return [future.result() for future in futures]
    except KeyboardInterrupt:
        job.stop_requested.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
