"""The asyncio service: NATS and JetStream, the embedded server, the router, the log, the CLI."""

from ._config import Settings, load_settings
from ._embedded import EmbeddedNats
from .errors import (
    ATLAS_ERRORS,
    BrokerError,
    CheckpointInvalid,
    ConfigError,
    DeliveryError,
    DirectoryUnavailable,
    LogIntegrityError,
    LogTampered,
    NatsUnavailable,
    ProofInvalid,
    SubmissionError,
    WitnessRefused,
)

__all__ = [
    "ATLAS_ERRORS",
    "BrokerError",
    "CheckpointInvalid",
    "ConfigError",
    "DeliveryError",
    "DirectoryUnavailable",
    "EmbeddedNats",
    "LogIntegrityError",
    "LogTampered",
    "NatsUnavailable",
    "ProofInvalid",
    "Settings",
    "SubmissionError",
    "WitnessRefused",
    "load_settings",
]
