"""Keys, canonical JSON and sealed packages (pure: no I/O except the key-file helpers).

JOSE is written on ``cryptography`` alone: compact JWS (EdDSA, ES256) and compact JWE
with A256GCM, key management ECDH-ES+A256KW (X25519 or P-256 recipients) or, for
post-quantum recipients, HPKE-9-KE (X-Wing = ML-KEM-768 + X25519, draft-ietf-jose-hpke-
encrypt-20 with draft-ietf-jose-hpke-pq-pqt-01).  A package is a broker-signed JWT nested
in a JWE to one recipient key; see ``seal`` and ``open_package``.  Every ``kid`` is the
RFC 7638 thumbprint of the key.  The wire format is written out in docs/package-format.md.
"""

from ._canonical import canonical_json
from ._errors import (
    CanonicalizationError,
    DecryptionFailed,
    InvalidKey,
    KeyFileError,
    KeyNotHeld,
    KeyRegistryError,
    MalformedPackage,
    PackageError,
    PackageExpired,
    PackageReplayed,
    RevokedSigningKey,
    SignatureInvalid,
    SubmissionSignatureInvalid,
    UnknownSigningKey,
    WrongAudience,
    WrongIssuer,
    WrongRecipientKey,
)
from ._files import GeneratedKeys, generate_org_keys, load_private_key, write_private_key
from ._jwe import jwe_decrypt, jwe_encrypt
from ._jwk import KeyKind, KeyUse, PrivateKey, PublicKey, jwk_thumbprint
from ._jws import jws_sign, jws_verify
from ._package import (
    MAX_PACKAGE_SIZE,
    PACKAGE_TYP,
    BrokerKeyring,
    OpenedPackage,
    SealedPackage,
    SerializedView,
    open_package,
    seal,
)
from ._replay import MemoryReplayGuard, ReplayGuard
from ._submission import SUBMISSION_TYP, sign_submission, verify_submission

__all__ = [
    "MAX_PACKAGE_SIZE",
    "PACKAGE_TYP",
    "SUBMISSION_TYP",
    "BrokerKeyring",
    "CanonicalizationError",
    "DecryptionFailed",
    "GeneratedKeys",
    "InvalidKey",
    "KeyFileError",
    "KeyKind",
    "KeyNotHeld",
    "KeyRegistryError",
    "KeyUse",
    "MalformedPackage",
    "MemoryReplayGuard",
    "OpenedPackage",
    "PackageError",
    "PackageExpired",
    "PackageReplayed",
    "PrivateKey",
    "PublicKey",
    "ReplayGuard",
    "RevokedSigningKey",
    "SealedPackage",
    "SerializedView",
    "SignatureInvalid",
    "SubmissionSignatureInvalid",
    "UnknownSigningKey",
    "WrongAudience",
    "WrongIssuer",
    "WrongRecipientKey",
    "canonical_json",
    "generate_org_keys",
    "jwe_decrypt",
    "jwe_encrypt",
    "jwk_thumbprint",
    "jws_sign",
    "jws_verify",
    "load_private_key",
    "open_package",
    "seal",
    "sign_submission",
    "verify_submission",
    "write_private_key",
]
