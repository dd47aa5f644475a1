"""The RFC 3261 §17 transaction layer: state tables (fsm), client and server transaction
records, and the sans-I/O ``TransactionLayer`` that matches messages to them."""

from sipwake.sip.transactions.layer import TransactionGone, TransactionLayer, new_branch
from sipwake.sip.transactions.server import MAGIC_COOKIE

__all__ = ["MAGIC_COOKIE", "TransactionGone", "TransactionLayer", "new_branch"]
