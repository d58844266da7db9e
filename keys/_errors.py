"""Errors of the key registry, JOSE and package code.

KeyRegistryError
├── CanonicalizationError       a value cannot be written as RFC 8785 canonical JSON
├── InvalidKey                  a JWK or key object is unusable (bad members, point not on
│                               curve, private members in a public JWK, wrong use)
├── KeyFileError                a key file is missing, unreadable, too open (mode & 0o077),
│                               already exists (never overwritten) or the passphrase is wrong
├── PackageError                a package (nested JWT) or compact JWS/JWE is refused
│   ├── MalformedPackage        not parseable, wrong sizes, forbidden header, bad claims
│   ├── DecryptionFailed        key unwrap or AES-GCM tag check failed (tampered or not ours)
│   ├── SignatureInvalid        the broker signature does not verify
│   ├── UnknownSigningKey       the signing kid is not in the key ring
│   ├── RevokedSigningKey       the signing key was revoked at or before the package's iat
│   ├── WrongIssuer             iss is not the expected broker
│   ├── WrongAudience           aud is not the organisation opening the package
│   ├── WrongRecipientKey       the JWE kid is not one of our keys, or the signed rcpt_kid
│   │                           differs from the key that decrypted (surreptitious forwarding)
│   ├── PackageExpired          exp is in the past (beyond the leeway)
│   └── PackageReplayed         the package id (jti) was opened before
└── SubmissionSignatureInvalid  an originator's signed submission does not verify

The JOSE functions (``jws_verify``, ``jwe_decrypt``) raise the ``PackageError`` subclasses
too; ``verify_submission`` translates them to ``SubmissionSignatureInvalid``.
Third-party exceptions (``ValueError``, ``InvalidTag``, ``InvalidSignature`` ...) never
escape: they are translated with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "CanonicalizationError",
    "DecryptionFailed",
    "InvalidKey",
    "KeyFileError",
    "KeyRegistryError",
    "MalformedPackage",
    "PackageError",
    "PackageExpired",
    "PackageReplayed",
    "RevokedSigningKey",
    "SignatureInvalid",
    "SubmissionSignatureInvalid",
    "UnknownSigningKey",
    "WrongAudience",
    "WrongIssuer",
    "WrongRecipientKey",
]


class KeyRegistryError(Exception):
    """Root of the keys package's errors."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)


class CanonicalizationError(KeyRegistryError):
    """The value has no RFC 8785 form (float where forbidden, NaN, bad key, lone surrogate)."""


class InvalidKey(KeyRegistryError):
    """A JWK or key object is unusable."""


class KeyFileError(KeyRegistryError):
    """A key file cannot be written or loaded safely."""


class PackageError(KeyRegistryError):
    """Root of the errors raised while opening a package or a compact JOSE object."""


class MalformedPackage(PackageError):
    """The token or its headers/claims are not well formed, or use a forbidden feature."""


class DecryptionFailed(PackageError):
    """The content encryption key could not be unwrapped or the GCM tag did not verify."""


class SignatureInvalid(PackageError):
    """The JWS signature does not verify with the named key."""


class UnknownSigningKey(PackageError):
    """The JWS kid is not in the key ring."""


class RevokedSigningKey(PackageError):
    """The signing key was revoked at or before the time the package was issued."""


class WrongIssuer(PackageError):
    """The iss claim is not the expected broker."""


class WrongAudience(PackageError):
    """The aud claim does not name the organisation opening the package."""


class WrongRecipientKey(PackageError):
    """The package is not encrypted to (or not signed for) one of our decryption keys."""


class KeyNotHeld(WrongRecipientKey):
    """The package is encrypted to a key the opener was not given: most often the
    opener's configuration (an old or wrong key file), not the package."""


class PackageExpired(PackageError):
    """The package's exp is in the past."""


class PackageReplayed(PackageError):
    """The package id was already opened."""


class SubmissionSignatureInvalid(KeyRegistryError):
    """An originator's signed submission does not verify; the message gives the reason."""
