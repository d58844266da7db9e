"""The broker keeps glibc from mapping and unmapping memory around every large package."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from broker._allocator import keep_heap_top

# Seals 64 KB views (the seal benchmark's) in a fresh process, since the faults depend on
# the process's history, and prints the minor page faults per seal.
_PROBE = textwrap.dedent(
    """
    import resource, sys
    from benchmarks.bench_seal import NOW, SRC, _view
    from keys import PrivateKey, seal
    import orjson
    if sys.argv[1] == "tuned":
        from broker._allocator import keep_heap_top
        assert keep_heap_top()
    view = _view(65536)
    broker, recipient = PrivateKey.generate(sys.argv[2]), PrivateKey.generate(sys.argv[3])
    def once():
        return seal(stix=view, iss="atlas-broker", aud="ec3", src=SRC, tlp="amber",
                    signing_key=broker, recipient_key=recipient.public, now=NOW, ttl=3600,
                    dumps=orjson.dumps)
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(300):
            once()
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 300
    print(faults)
    """
)


# glibc's starting thresholds, pinned: a fresh process runs with these until its first
# large mapping is freed, and whether that happens depends on everything it did before.
_GLIBC_START = {"MALLOC_TRIM_THRESHOLD_": "131072", "MALLOC_MMAP_THRESHOLD_": "131072"}


def _faults_per_seal(mode: str, sign: str, enc: str) -> float:
    env = {
        k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES" and not k.startswith("MALLOC_")
    }
    if mode != "tuned":
        env.update(_GLIBC_START)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode, sign, enc],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.split()[-1])


@pytest.mark.parametrize(("sign", "enc"), [("Ed25519", "X25519"), ("ES256", "P-256")])
def test_a_64_kb_seal_stops_faulting_pages_in_with_the_thresholds_set(sign: str, enc: str) -> None:
    # The control: with glibc's starting thresholds every seal gives pages back and
    # faults them in again.
    assert _faults_per_seal("start", sign, enc) > 20
    assert _faults_per_seal("tuned", sign, enc) < 2


@pytest.mark.parametrize(
    "name", ["MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES"]
)
def test_glibcs_own_settings_win(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "131072")
    assert keep_heap_top() is False
