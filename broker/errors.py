"""Errors of the broker, and the tree of every error Atlas raises on purpose.

``policy`` and ``keys`` are pure packages that may not import ``broker``, and ``adapters``
must not either, so each package roots its own subtree; this module names them all so that
the CLI and the workers catch exactly our errors (``ATLAS_ERRORS``) and nothing else::

    BrokerError                     (broker.errors)
    ├── ConfigError                 a setting is missing or invalid; names the setting
    ├── NatsUnavailable             cannot start the embedded server or reach the configured one
    ├── DirectoryUnavailable        no community directory in the key-value bucket yet
    ├── SubmissionError             a bundle cannot be submitted (not JSON, not STIX 2.1,
    │                               too large, ...); names what and where
    ├── DeliveryError               a package could not be stored
    └── LogIntegrityError           the dissemination log or its checkpoints do not hold up
        ├── ProofInvalid            an inclusion or consistency proof does not verify
        ├── CheckpointInvalid       a signed note or checkpoint is malformed, or its
        │                           signature does not verify against a known key
        ├── LogTampered             audit: the log contradicts its checkpoints; names the
        │                           first bad index
        └── WitnessRefused          a witness will not cosign: not consistent with the last
                                    checkpoint it cosigned
    PolicyError                     (policy)
    ├── DirectoryError              the directory file does not validate; names the key path
    └── BundleRejected              same id and modified with different content, ...
    KeyRegistryError                (keys)
    ├── KeyFileError, InvalidKey, CanonicalizationError, SubmissionSignatureInvalid
    └── PackageError                MalformedPackage, DecryptionFailed, SignatureInvalid,
                                    UnknownSigningKey, RevokedSigningKey, WrongAudience,
                                    WrongRecipientKey, PackageExpired, PackageReplayed
    AdapterError                    (adapters)
"""

from __future__ import annotations

from adapters import AdapterError
from keys import KeyRegistryError
from policy import PolicyError

__all__ = [
    "ATLAS_ERRORS",
    "BrokerError",
    "CheckpointInvalid",
    "ConfigError",
    "DeliveryError",
    "DirectoryUnavailable",
    "LogIntegrityError",
    "LogTampered",
    "NatsUnavailable",
    "ProofInvalid",
    "SubmissionError",
    "WitnessRefused",
]


class BrokerError(Exception):
    """Root of the broker's own errors."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)


class ConfigError(BrokerError):
    """A setting is missing or invalid; the message names it."""


class NatsUnavailable(BrokerError):
    """The embedded nats-server did not start, or the configured server is unreachable."""


class DirectoryUnavailable(BrokerError):
    """The community directory has not been loaded into the key-value bucket."""


class SubmissionError(BrokerError):
    """A bundle cannot be submitted; the message says what is wrong and where."""


class DeliveryError(BrokerError):
    """A recipient's package could not be stored in DELIVERIES."""


class LogIntegrityError(BrokerError):
    """The dissemination log, a proof or a checkpoint does not hold up."""


class ProofInvalid(LogIntegrityError):
    """An RFC 9162 inclusion or consistency proof does not verify."""


class CheckpointInvalid(LogIntegrityError):
    """A signed note or checkpoint is malformed or not signed by a known key."""


class LogTampered(LogIntegrityError):
    """The log contradicts its signed checkpoints; ``index`` is the first bad entry."""

    def __init__(self, msg: str, *, index: int | None) -> None:
        super().__init__(msg)
        self.index = index


class WitnessRefused(LogIntegrityError):
    """A witness refuses to cosign a checkpoint inconsistent with its last cosigned one."""


ATLAS_ERRORS: tuple[type[Exception], ...] = (
    BrokerError,
    PolicyError,
    KeyRegistryError,
    AdapterError,
)
