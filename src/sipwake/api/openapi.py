"""The OpenAPI 3.1 description of the admin API, served at ``GET /admin/openapi.json``.

Kept by hand next to api/admin.py (tests/api/test_admin.py checks that every route the
router answers is described and that each described route answers)."""

from __future__ import annotations

from typing import Any

import msgspec

_JSON_OBJECT: dict[str, Any] = {"type": "object"}
_AOR = {
    "name": "aor",
    "in": "query",
    "required": True,
    "description": "sip:user@domain, user@domain, or a bare user name (our first domain)",
    "schema": {"type": "string"},
}


def _ok(description: str) -> dict[str, Any]:
    return {
        "200": {
            "description": description,
            "content": {"application/json": {"schema": _JSON_OBJECT}},
        },
        "401": {"description": "missing or wrong bearer token"},
    }


SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "sipwake admin API",
        "version": "1",
        "description": "Operator views and actions. Bearer token: api.admin_token.",
    },
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "security": [{"bearer": []}],
    "paths": {
        "/admin/bindings": {
            "get": {
                "summary": "List bindings: one AoR's (aor=) or all, a page at a time",
                "parameters": [
                    {**_AOR, "required": False},
                    {"name": "offset", "in": "query", "schema": {"type": "integer"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer"}},
                ],
                "responses": _ok("bindings, and the offset of the next page (null: last)"),
            },
            "delete": {
                "summary": "Remove an AoR's bindings, or one device's (instance=)",
                "parameters": [
                    _AOR,
                    {
                        "name": "instance",
                        "in": "query",
                        "description": "+sip.instance of the device, e.g. urn:uuid:...",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": _ok("the contacts removed"),
            },
        },
        "/admin/push-test": {
            "post": {
                "summary": "Send a test push (type test) to every device of an AoR",
                "parameters": [_AOR],
                "responses": _ok("each device's provider answer and latency"),
            }
        },
        "/admin/calls": {
            "get": {
                "summary": "Held calls (calls) and recently finished ones (recent)",
                "responses": _ok("held and recent calls"),
            }
        },
        "/admin/calls/{call_id}": {
            "get": {
                "summary": "One call's wake-up timeline",
                "parameters": [
                    {
                        "name": "call_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    **_ok("the call's events, ms from the INVITE"),
                    "404": {"description": "unknown call"},
                },
            }
        },
        "/admin/messages": {
            "get": {
                "summary": "SIP MESSAGEs stored for sleeping devices",
                "parameters": [{**_AOR, "required": False}],
                "responses": _ok("messages of one AoR, or counts per AoR"),
            }
        },
        "/admin/openapi.json": {
            "get": {"summary": "This document", "security": [], "responses": _ok("OpenAPI")}
        },
    },
}

OPENAPI: bytes = msgspec.json.encode(SPEC)
