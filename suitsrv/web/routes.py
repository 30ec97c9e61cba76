"""Every route of the service, by audience (DESIGN.md "keep the audiences apart")."""

from __future__ import annotations

from . import attestation, device, events, gateway, operator, public, vendor
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
    ]
