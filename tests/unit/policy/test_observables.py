"""Observable ids checked against the stix2 library's deterministic ids (independent code)."""

from __future__ import annotations

import stix2

from policy import observable_id_problem


def _plain(obj: object) -> dict[str, object]:
    return dict(obj.items())  # type: ignore[attr-defined]


def test_stix2s_own_ids_pass() -> None:
    for made in (
        stix2.IPv4Address(value="198.51.100.7"),
        stix2.DomainName(value="exämple.com"),
        stix2.URL(value="https://x.example/a?b=c"),
        stix2.AutonomousSystem(number=64500),
        stix2.Mutex(name="Global\\evil"),
    ):
        obj = _plain(made)
        assert observable_id_problem(obj, str(obj["id"]), str(obj["type"])) is None


def test_an_id_derived_from_another_value_is_named() -> None:
    made = _plain(stix2.IPv4Address(value="1.2.3.4"))
    forged = {**made, "value": "10.0.0.1"}
    problem = observable_id_problem(forged, str(made["id"]), "ipv4-addr")
    assert problem is not None and "'value'" in problem


def test_random_ids_and_types_with_several_properties_are_left_alone() -> None:
    v4 = "ipv4-addr--4f3a1c2e-9b7d-4e21-8c55-0d1e2f3a4b5c"
    assert observable_id_problem({"value": "10.0.0.1"}, v4, "ipv4-addr") is None
    made = _plain(stix2.File(name="a.exe"))
    assert observable_id_problem({**made, "name": "b.exe"}, str(made["id"]), "file") is None


def test_files_with_other_hashes_under_one_id_are_not_compared() -> None:
    from policy import version_digests

    md5 = _plain(stix2.File(hashes={"MD5": "d41d8cd98f00b204e9800998ecf8427e"}))
    both = {**md5, "hashes": {**md5["hashes"], "SHA-256": "e3b0c442" * 8}}  # type: ignore[dict-item]
    bundle = {"type": "bundle", "id": "bundle--2f1b2b0a-5a2e-4c3e-9b1f-0c6d8e4a1b20"}
    assert version_digests({**bundle, "objects": [md5]}) == {}
    assert version_digests({**bundle, "objects": [both]}) == {}
