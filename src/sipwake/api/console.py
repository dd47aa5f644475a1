"""The admin console (``GET /admin/ui``): one HTML page and one script, shipped as package
data in api/ui/ and served as they are: no build step, nothing fetched from elsewhere.

The page asks for the admin token and the script sends it as a bearer token with each
``/admin/calls`` request; it lists held and recent calls and draws one call's timeline as a
waterfall (a row per device, the events on a time axis)."""

from __future__ import annotations

import functools
import importlib.resources

CONSOLE_FILES = {
    "/admin/ui": ("index.html", "text/html; charset=utf-8"),
    "/admin/ui/app.js": ("app.js", "text/javascript; charset=utf-8"),
}
# Only our own script, no framing (clickjacking), no MIME sniffing.
CONSOLE_HEADERS = [
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
        "connect-src 'self'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
]


@functools.cache
def _read(name: str) -> bytes:
    return (importlib.resources.files("sipwake.api") / "ui" / name).read_bytes()


def console_file(path: str) -> tuple[bytes, str]:
    name, ctype = CONSOLE_FILES[path]
    return _read(name), ctype
