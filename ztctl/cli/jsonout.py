"""The JSON document that ``--output json`` prints on stdout, one per command.

Every document has ``schema``, ``ztctl``, ``command``, ``mode``,
``exit_code`` and ``error`` (null or an object with ``type``, ``message`` and
``hint``). The README documents the rest; field names are kept stable because
CI jobs parse them.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

from ztctl import __version__
from ztctl.engine.model import RunResult
from ztctl.errors import ZtctlError
from ztctl.redact import redact

SCHEMA_VERSION = 1


def base_document(command: str, mode: str, exit_code: int, error: BaseException | None = None) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "ztctl": __version__,
        "command": command,
        "mode": mode,
        "exit_code": exit_code,
        "error": error_object(error),
    }


def error_object(error: BaseException | None) -> dict[str, Any] | None:
    if error is None:
        return None
    hint = error.hint if isinstance(error, ZtctlError) else None
    return {"type": type(error).__name__, "message": redact(str(error)), "hint": hint}


def run_document(result: RunResult, exit_code: int) -> dict[str, Any]:
    document = base_document(result.command, str(result.mode), exit_code)
    document["run_id"] = result.run_id
    document["counts"] = result.counts.to_dict()
    document["requests"] = result.requests
    document["previous_failures"] = result.previous_failures
    document["stages"] = [stage.to_dict() for stage in result.stages]
    return document


def emit(document: dict[str, Any]) -> None:
    text = json.dumps(document, indent=2, default=encode_json_value, sort_keys=False)
    sys.stdout.write(redact(text) + "\n")
    sys.stdout.flush()


def encode_json_value(value: object) -> str:
    """Encode what ``json`` cannot: times as ISO 8601 in UTC with ``Z``, anything else as text."""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)
