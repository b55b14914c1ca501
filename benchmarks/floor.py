"""The floor: read and parse every network's bulk member list once, and do nothing else.

Run by the harness in a child process::

    BENCHMARK_CONTROLLER_TOKEN=... python -m benchmarks.floor URL NETWORK_IDS_FILE [--fresh-connections]

It prints one JSON object: networks and members read, and the seconds spent
reading. By default it uses one pooled ``httpx.Client``, whose kept-alive
connections pay the controller's reused-connection latency. With
``--fresh-connections`` every request carries ``Connection: close``, as ztctl's
default client does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import httpx

TOKEN_VARIABLE = "BENCHMARK_CONTROLLER_TOKEN"


def read_all_members(client: httpx.Client, network_ids: list[str]) -> int:
    """GET and parse each network's bulk member list; return the number of members read."""
    members = 0
    for network_id in network_ids:
        response = client.get(f"/unstable/controller/network/{network_id}/member")
        response.raise_for_status()
        members += len(response.json()["data"])
    return members


def build_client(url: str, token: str, *, fresh_connections: bool) -> httpx.Client:
    headers = {"X-ZT1-Auth": token}
    if not fresh_connections:
        return httpx.Client(base_url=url, headers=headers, timeout=30)
    headers["Connection"] = "close"
    return httpx.Client(
        base_url=url, headers=headers, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor", description=__doc__.splitlines()[0])
    parser.add_argument("url", help="controller base URL, such as http://127.0.0.1:9993")
    parser.add_argument("network_ids_file", type=Path, help="JSON file with the list of network IDs to read")
    parser.add_argument("--fresh-connections", action="store_true", help="send Connection: close on every request")
    arguments = parser.parse_args(argv)
    token = os.environ.get(TOKEN_VARIABLE)
    if not token:
        parser.error(f"missing controller token: set {TOKEN_VARIABLE}")
    network_ids = json.loads(arguments.network_ids_file.read_text(encoding="utf-8"))

    start = time.perf_counter()
    with build_client(arguments.url, token, fresh_connections=arguments.fresh_connections) as client:
        members = read_all_members(client, network_ids)
    seconds = time.perf_counter() - start
    json.dump({"networks": len(network_ids), "members": members, "seconds": round(seconds, 3)}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
