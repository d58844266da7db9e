"""Errors of the edges (TAXII, receive bridge).

AdapterError
├── BridgeError          the receive bridge cannot open or store a package
└── TaxiiProtocolError   a TAXII peer answered outside the protocol
"""

from __future__ import annotations

__all__ = ["AdapterError", "BridgeError", "TaxiiProtocolError"]


class AdapterError(Exception):
    def __init__(self, msg: str) -> None:
        super().__init__(msg)


class BridgeError(AdapterError):
    """The receive bridge cannot open or store a package."""


class TaxiiProtocolError(AdapterError):
    """A TAXII peer answered outside the protocol."""
