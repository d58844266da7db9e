"""The error tree: one root, messages kept, documented in the module docstring."""

from __future__ import annotations

import pytest

import keys
from keys import KeyRegistryError, PackageError, _errors

ERRORS = [getattr(keys, name) for name in _errors.__all__]
PACKAGE_ERRORS = [
    "MalformedPackage",
    "DecryptionFailed",
    "SignatureInvalid",
    "UnknownSigningKey",
    "RevokedSigningKey",
    "WrongIssuer",
    "WrongAudience",
    "WrongRecipientKey",
    "PackageExpired",
    "PackageReplayed",
]


class TestErrorTree:
    @pytest.mark.parametrize("error", ERRORS)
    def test_derives_from_root_when_defined(self, error: type[Exception]) -> None:
        assert issubclass(error, KeyRegistryError)
        assert not issubclass(error, ValueError)

    @pytest.mark.parametrize("name", PACKAGE_ERRORS)
    def test_derives_from_package_error_when_raised_by_open(self, name: str) -> None:
        assert issubclass(getattr(keys, name), PackageError)

    def test_submission_error_is_not_a_package_error_when_defined(self) -> None:
        assert not issubclass(keys.SubmissionSignatureInvalid, PackageError)

    @pytest.mark.parametrize("error", ERRORS)
    def test_keeps_message_when_raised(self, error: type[Exception]) -> None:
        exc = error("what went wrong")
        assert str(exc) == "what went wrong"
        assert exc.args == ("what went wrong",)

    @pytest.mark.parametrize("error", ERRORS)
    def test_is_documented_in_tree_when_defined(self, error: type[Exception]) -> None:
        assert _errors.__doc__ is not None
        assert error.__name__ in _errors.__doc__
        assert error.__doc__
