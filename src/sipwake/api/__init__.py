"""HTTP API: app-facing decline route, health, metrics and admin (see api/routes.py)."""

from sipwake.api.admin import AdminService
from sipwake.api.metrics import Metrics
from sipwake.api.routes import ApiApp, DeclineService
from sipwake.api.server import ApiServer
from sipwake.policy.decline import DeclineResult

__all__ = ["AdminService", "ApiApp", "ApiServer", "DeclineResult", "DeclineService", "Metrics"]
