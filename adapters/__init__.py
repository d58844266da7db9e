"""The edges: the partner receive bridge, STIX helpers, TAXII (to come).

Adapters never import ``broker``: the broker hands them what they need (a NATS JetStream
context, a submit function, key material).
"""

from ._bridge import DiskReplayGuard, Receiver, ReceiveStats, atomic_write
from ._consumer import (
    cancel_and_wait,
    check_cancelled,
    delivery_consumer,
    durable_pull,
    ensure_durable,
    gather_or_fail,
    keep_in_progress,
    receipt_consumer,
    supervised,
)
from ._errors import AdapterError, BridgeError, TaxiiProtocolError
from ._receipts import ReceiptKeeper, ReceiptStats
from ._stix import InvalidBundle, check_bundle, parse_bundle, parse_json

__all__ = [
    "AdapterError",
    "BridgeError",
    "DiskReplayGuard",
    "InvalidBundle",
    "ReceiptKeeper",
    "ReceiptStats",
    "ReceiveStats",
    "Receiver",
    "TaxiiProtocolError",
    "atomic_write",
    "cancel_and_wait",
    "check_bundle",
    "check_cancelled",
    "delivery_consumer",
    "durable_pull",
    "ensure_durable",
    "gather_or_fail",
    "keep_in_progress",
    "parse_bundle",
    "parse_json",
    "receipt_consumer",
    "supervised",
]
