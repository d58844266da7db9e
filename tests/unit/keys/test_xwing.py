"""X-Wing (ML-KEM-768 + X25519) keys: seed expansion, AKP JWK form, thumbprints."""

from __future__ import annotations

import base64
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import mlkem

from keys import InvalidKey, PrivateKey, PublicKey, jwk_thumbprint
from keys import _xwing as xwing_module
from keys._xwing import (
    XWingPrivateKey,
    XWingPublicKey,
    xwing_private_jwk,
    xwing_public_from_jwk,
    xwing_seed_from_jwk,
)

VECTOR = json.loads((Path(__file__).parent / "data" / "hpke-9-ke.json").read_text())


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _public_vector_jwk() -> dict[str, Any]:
    return {k: VECTOR["jwk"][k] for k in ("kty", "alg", "pub")}


class TestXWingSeed:
    def test_derives_published_public_key_when_seed_is_the_draft_vector(self) -> None:
        key = PrivateKey.from_xwing_seed(_unb64(VECTOR["jwk"]["priv"]))
        assert key.public.to_jwk()["pub"] == VECTOR["jwk"]["pub"]
        assert key.thumbprint == VECTOR["jwk"]["kid"]
        assert (key.kind, key.use, key.alg) == ("X-Wing", "enc", "HPKE-9-KE")

    def test_generates_distinct_seeds_when_called_twice(self) -> None:
        a, b = PrivateKey.generate("X-Wing"), PrivateKey.generate("X-Wing")
        assert a.thumbprint != b.thumbprint
        assert len(a._key.seed) == 32  # type: ignore[union-attr]

    @pytest.mark.parametrize("seed", [b"", b"x" * 31, b"x" * 33, "x" * 32, None])
    def test_raises_when_seed_is_not_32_bytes(self, seed: Any) -> None:
        with pytest.raises(InvalidKey, match="32-byte seed"):
            PrivateKey.from_xwing_seed(seed)

    def test_accepts_bytearray_when_seed_is_mutable(self) -> None:
        seed = bytearray(_unb64(VECTOR["jwk"]["priv"]))
        assert PrivateKey.from_xwing_seed(seed).thumbprint == VECTOR["jwk"]["kid"]  # type: ignore[arg-type]

    def test_hides_seed_when_repr_or_pickled(self) -> None:
        raw = XWingPrivateKey(b"s" * 32)
        assert "s" * 8 not in repr(raw)
        assert repr(raw) == "XWingPrivateKey(<seed hidden>)"
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(raw)
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(PrivateKey(raw, "X-Wing"))

    def test_refuses_mutation_when_frozen(self) -> None:
        raw = XWingPrivateKey(b"s" * 32)
        with pytest.raises(AttributeError, match="immutable"):
            raw._seed = b"t" * 32
        with pytest.raises(AttributeError, match="immutable"):
            raw.public_key()._raw = b""

    def test_raises_invalid_key_when_backend_lacks_mlkem(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def unsupported(data: bytes) -> Any:
            raise UnsupportedAlgorithm("no ML-KEM here")

        monkeypatch.setattr(mlkem.MLKEM768PrivateKey, "from_seed_bytes", unsupported)
        monkeypatch.setattr(mlkem.MLKEM768PublicKey, "from_public_bytes", unsupported)
        with pytest.raises(InvalidKey, match="no ML-KEM-768"):
            PrivateKey.generate("X-Wing")
        with pytest.raises(InvalidKey, match="no ML-KEM-768"):
            PublicKey.from_jwk(_public_vector_jwk())


class TestXWingPublicJwk:
    def test_matches_draft_kid_when_thumbprint_is_computed(self) -> None:
        assert jwk_thumbprint(VECTOR["jwk"]) == VECTOR["jwk"]["kid"]
        public = PublicKey.from_jwk(_public_vector_jwk())
        assert public.thumbprint == VECTOR["jwk"]["kid"]
        assert public == PrivateKey.from_xwing_seed(_unb64(VECTOR["jwk"]["priv"])).public

    def test_exports_akp_jwk_when_converted(self) -> None:
        public = PrivateKey.generate("X-Wing").public
        jwk = public.to_jwk()
        assert jwk == {
            "kty": "AKP",
            "alg": "HPKE-9-KE",
            "pub": jwk["pub"],
            "kid": public.thumbprint,
            "use": "enc",
        }
        assert len(_unb64(jwk["pub"])) == 1216
        assert public.crv == "MLKEM768-X25519"
        assert PublicKey.from_jwk(jwk) == public
        assert repr(public) == f"PublicKey(kind='X-Wing', kid={public.thumbprint!r})"

    def test_raises_when_public_jwk_carries_the_seed(self) -> None:
        with pytest.raises(InvalidKey, match=r"private member.*priv"):
            PublicKey.from_jwk(VECTOR["jwk"])

    @pytest.mark.parametrize(
        ("changes", "match"),
        [
            ({"alg": "HPKE-10-KE"}, "'HPKE-10-KE' is not supported"),
            ({"alg": None}, "None is not supported"),
            ({"alg": "ML-DSA-65"}, "not supported"),
            ({"use": "sig"}, "cannot be used for 'sig'"),
            ({"pub": None}, "'pub' is missing"),
            ({"pub": "A+B"}, "not unpadded base64url"),
            ({"pub": _b64(bytes(1215))}, "1215 bytes, expected 1216"),
            ({"pub": _b64(b"\xff" * 1216)}, "invalid ML-KEM-768 part"),
        ],
    )
    def test_raises_when_akp_jwk_is_unacceptable(self, changes: dict[str, Any], match: str) -> None:
        jwk = {**_public_vector_jwk(), **changes}
        with pytest.raises(InvalidKey, match=match):
            PublicKey.from_jwk({k: v for k, v in jwk.items() if v is not None})

    def test_raises_when_caller_asks_for_a_signing_key(self) -> None:
        with pytest.raises(InvalidKey, match="cannot be used for 'sig'"):
            PublicKey.from_jwk(_public_vector_jwk(), use="sig")

    def test_wraps_raw_key_when_kind_fits(self) -> None:
        raw = XWingPublicKey(_unb64(VECTOR["jwk"]["pub"]))
        assert PublicKey.from_cryptography(raw).kind == "X-Wing"
        with pytest.raises(InvalidKey, match="cannot be used for 'sig'"):
            PublicKey.from_cryptography(raw, use="sig")
        with pytest.raises(InvalidKey, match="is not a 'X25519' key"):
            PublicKey(raw, "X25519")


class TestXWingPrivateJwk:
    def test_round_trips_when_private_jwk_is_exported(self) -> None:
        key = PrivateKey.generate("X-Wing")
        jwk = xwing_private_jwk(key._key)  # type: ignore[arg-type]
        assert set(jwk) == {"kty", "alg", "pub", "priv"}
        assert xwing_seed_from_jwk(jwk).seed == key._key.seed  # type: ignore[union-attr]

    def test_raises_when_pub_does_not_match_seed(self) -> None:
        other = xwing_private_jwk(XWingPrivateKey(b"o" * 32))
        jwk = {**VECTOR["jwk"], "pub": other["pub"]}
        with pytest.raises(InvalidKey, match="does not belong"):
            xwing_seed_from_jwk(jwk)

    def test_returns_public_key_when_jwk_has_enc_use(self) -> None:
        assert xwing_public_from_jwk({**_public_vector_jwk(), "use": "enc"}, "enc").raw == (
            _unb64(VECTOR["jwk"]["pub"])
        )

    def test_module_names_the_suite_when_documented(self) -> None:
        assert xwing_module.__doc__ is not None
        assert "HPKE-10-KE" in xwing_module.__doc__
        assert xwing_module.HPKE_ALG == "HPKE-9-KE"
