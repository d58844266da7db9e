"""The asyncio service: NATS and JetStream, the embedded server, the router, the log, the CLI."""

from ._config import Settings, load_settings
from ._embedded import EmbeddedNats
from .errors import (
    ATLAS_ERRORS,
    BrokerError,
    ConfigError,
    DeliveryError,
    DirectoryUnavailable,
    NatsUnavailable,
    SubmissionError,
)

__all__ = [
    "ATLAS_ERRORS",
    "BrokerError",
    "ConfigError",
    "DeliveryError",
    "DirectoryUnavailable",
    "EmbeddedNats",
    "NatsUnavailable",
    "Settings",
    "SubmissionError",
    "load_settings",
]
