"""Every route of the service, by audience (DESIGN.md "keep the audiences apart")."""

from __future__ import annotations

from . import (
    attestation,
    config_vault,
    device,
    events,
    gateway,
    mud_routes,
    operator,
    public,
    timeline,
    vendor,
)
from .app import Route

__all__ = ["all_routes"]


def all_routes() -> list[Route]:
    return [
        *public.routes(),
        *operator.routes(),
        *vendor.routes(),
        *device.routes(),
        *attestation.routes(),
        *gateway.routes(),
        *events.routes(),
        *mud_routes.routes(),
        *timeline.routes(),
        *config_vault.routes(),
    ]
