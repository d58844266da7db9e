"""The public surface of the policy package."""

from __future__ import annotations

import policy


class TestExports:
    def test_all_is_sorted(self) -> None:
        assert policy.__all__ == sorted(policy.__all__)

    def test_all_is_complete(self) -> None:
        public = {name for name in dir(policy) if not name.startswith("_")}
        assert public == set(policy.__all__)

    def test_router_interface_exported(self) -> None:
        for name in ("Decision", "Submission", "View", "evaluate", "evaluate_all"):
            assert name in policy.__all__
        assert {"recipients", "version_digests"} <= set(policy.__all__)
