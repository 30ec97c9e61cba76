"""Public endpoints: health and the OpenAPI 3.1 description generated from the route table."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from suitsrv import __version__
from suitsrv.auth import Principal

from .app import ROUTES, Route, json_response

__all__ = ["openapi_document", "routes"]


async def healthz(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    return json_response({"status": "ok", "version": __version__})


def _operation_id(route: Route) -> str:
    words = re.sub(r"[^a-z0-9]+", "_", route.path.lower()).strip("_")
    return f"{route.method.lower()}_{words}"


def _problem(text: str) -> dict[str, Any]:
    return {"description": text, "content": {"application/problem+json": {}}}


def openapi_document(table: tuple[Route, ...]) -> dict[str, Any]:
    """OpenAPI 3.1 from the same Route table the app is built from, so they cannot drift."""
    paths: dict[str, dict[str, Any]] = {}
    for route in table:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "tags": [route.tag],
            "operationId": _operation_id(route),
            "responses": {
                str(code): _problem(text) if code >= 400 else {"description": text}
                for code, text in (route.responses or {200: "ok"}).items()
            },
        }
        if route.roles is not None:
            operation["security"] = [{"bearer": []}]
            operation["x-roles"] = sorted(str(r) for r in route.roles)
            operation["responses"].setdefault("401", _problem("no or bad credentials"))
            operation["responses"].setdefault("403", _problem("role not allowed"))
        if route.parameters:
            # A path parameter of the wrong shape (not a hex SHA-256, say) is refused first.
            operation["responses"].setdefault("400", _problem("malformed request"))
            operation["parameters"] = [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                for p in route.parameters
            ]
        if route.request_type:
            types = route.request_type
            types = (types,) if isinstance(types, str) else types
            operation["requestBody"] = {"required": True, "content": {t: {} for t in types}}
            # web/bodies.py: every body is read under a limit and checked for its media type.
            for code, text in ((400, "malformed request body"), (413, "body too large"),
                               (415, "wrong Content-Type")):  # fmt: skip
                operation["responses"].setdefault(str(code), _problem(text))
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "suitsrv", "version": __version__,
                 "description": "Firmware updates (IETF SUIT) and remote attestation (IETF RATS)"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }  # fmt: skip


async def openapi(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    return json_response(openapi_document(request.app[ROUTES]))


def routes() -> list[Route]:
    return [
        Route("GET", "/healthz", healthz, None, "Liveness", "public", responses={200: "ok"}),
        Route("GET", "/openapi.json", openapi, None, "This API's OpenAPI 3.1 description",
              "public", responses={200: "OpenAPI document"}),
    ]  # fmt: skip
