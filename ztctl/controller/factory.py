"""Pick the controller backend named in the settings."""

from __future__ import annotations

from ztctl.config import ControllerSettings, ControllerToken
from ztctl.controller.base import ControllerClient


def build_controller(
    settings: ControllerSettings, token: ControllerToken, *, read_only: bool
) -> ControllerClient:
    """Create the client for ``settings.type``; a read-only client rejects every write."""
    if settings.type == "central":
        from ztctl.controller.central import CentralClient

        return CentralClient(
            settings.url,
            token.value.get_secret_value(),
            read_only=read_only,
            timeout=settings.timeout,
            connect_timeout=settings.connect_timeout,
            concurrency=settings.concurrency,
            retries=settings.retries,
            rate=settings.rate,
            token_source=token.source,
        )
    from ztctl.controller.zerotier_one import ZeroTierOneClient

    return ZeroTierOneClient(
        settings.url,
        token.value.get_secret_value(),
        read_only=read_only,
        timeout=settings.timeout,
        connect_timeout=settings.connect_timeout,
        concurrency=settings.concurrency,
        retries=settings.retries,
        keepalive=settings.keepalive,
        token_source=token.source,
    )
