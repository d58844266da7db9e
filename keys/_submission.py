"""Originators' signed submissions: a compact JWS over the submitted bytes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ._errors import PackageError, SubmissionSignatureInvalid
from ._jwk import PrivateKey, PublicKey
from ._jws import jws_sign, jws_verify

__all__ = ["SUBMISSION_TYP", "sign_submission", "verify_submission"]

SUBMISSION_TYP: Final = "atlas-sub+jws"


def sign_submission(payload: bytes, key: PrivateKey, *, org: str, now: int) -> str:
    """Sign ``payload`` for organisation ``org``; header ``alg, kid, typ, org, iat``."""
    return jws_sign(payload, key, {"typ": SUBMISSION_TYP, "org": org, "iat": now})


def verify_submission(
    token: str | bytes, keys_for_org: Mapping[str, PublicKey], *, org: str | None = None
) -> tuple[dict[str, Any], bytes]:
    """Verify a signed submission with the originator's keys; return (header, payload).

    Every failure raises :class:`SubmissionSignatureInvalid` naming the reason.  When
    ``org`` is given the header's ``org`` must equal it.
    """
    try:
        header, payload = jws_verify(token, keys_for_org)
    except PackageError as exc:
        raise SubmissionSignatureInvalid(f"submission signature invalid: {exc}") from exc
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in (
        SUBMISSION_TYP,
        "application/" + SUBMISSION_TYP,
    ):
        raise SubmissionSignatureInvalid(f"submission typ {typ!r} is not {SUBMISSION_TYP!r}")
    signed_org = header.get("org")
    if not isinstance(signed_org, str) or not signed_org:
        raise SubmissionSignatureInvalid("submission header has no 'org'")
    if org is not None and signed_org != org:
        raise SubmissionSignatureInvalid(
            f"submission is signed for org {signed_org!r}, expected {org!r}"
        )
    iat = header.get("iat")
    if not isinstance(iat, int) or isinstance(iat, bool):
        raise SubmissionSignatureInvalid("submission header has no integer 'iat'")
    return header, payload
