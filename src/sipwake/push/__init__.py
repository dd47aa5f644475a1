"""Push providers (APNs, FCM, Web Push, webhook) behind one interface (push/base.py)."""

from sipwake.push.base import (
    Delivered,
    Permanent,
    PushOutcome,
    PushProvider,
    PushRequest,
    TokenRejected,
    Transient,
)

__all__ = [
    "Delivered",
    "Permanent",
    "PushOutcome",
    "PushProvider",
    "PushRequest",
    "TokenRejected",
    "Transient",
]
