"""Every bundle the size limit admits is deliverable; one beyond it is refused at the door.

A sealed package base64-encodes the view twice (JWS in JWE), about 4/3 of the signed
submission. The limit is validated against nats.max_payload so that the largest admitted
bundle still fits one message; the router's package-too-large refusal is only a backstop
(tests/integration/test_limits.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from nats.js import JetStreamContext

from broker._audit import read_log
from broker._bus import DELIVERIES
from broker.errors import SubmissionError
from tests.integration.helpers import bundle, indicator, publish, wait_routed

pytestmark = pytest.mark.integration


async def test_the_largest_admitted_bundle_is_delivered_and_a_larger_one_refused(
    js: JetStreamContext,
    make_community: Callable[..., Any],
    running_router: Any,
    tmp_path: Path,
) -> None:
    community = make_community()
    settings = await running_router(community)
    limit = settings.limits.max_bundle_bytes
    # The signed submission is ~4/3 of the bundle; aim just under the limit.
    big = indicator("clear", "large but within the limits")
    big["description"] = "x" * (limit * 3 // 4 - 4096)
    sid = await publish(settings, js, community, tmp_path, "bank-a", bundle(big))
    await wait_routed(js, 1)
    entries = [r.entry async for r in read_log(js)]
    assert [e["result"] for e in entries if e.get("sub") == sid] == ["accepted"]
    assert (await js.stream_info(DELIVERIES)).state.messages == 2  # both partners

    bigger = indicator("clear", "beyond the limit")
    bigger["description"] = "x" * (limit * 3 // 4 + 4096)
    with pytest.raises(SubmissionError, match=r"limits\.max_bundle_bytes"):
        await publish(settings, js, community, tmp_path, "bank-a", bundle(bigger))
