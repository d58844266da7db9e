"""``atlas-broker taxii pull``: a member's TAXII collection into the broker, on its behalf.

Submissions are signed by the broker's key with ``via: "taxii-pull"`` (the router logs it),
and published on ``atlas.submit.<org>`` like any other.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from pathlib import Path
from typing import Any

import nats.js.errors
import structlog
from nats.js import JetStreamContext

from adapters import check_cancelled
from adapters._taxii._client import open_collection
from adapters._taxii._poller import Poller, PullError, PullStats, Unsignable

from ._bus import ensure_streams, nats_session, submit_stream, submit_subject
from ._config import Settings
from ._directory_store import ensure_directory_intake
from ._service import broker_signing_key, streams_for
from ._submission import SubmissionTooLarge, TooManyObjects, make_submission
from .errors import SubmissionError

__all__ = ["pull_member"]

log = structlog.get_logger()


async def pull_member(
    settings: Settings,
    *,
    org: str,
    url: str,
    user: str | None,
    password: str | None,
    to: tuple[str, ...] = (),
    once: bool = True,
    interval: float = 60.0,
    js: JetStreamContext | None = None,
    ca_file: Path | None = None,
) -> PullStats:
    key = broker_signing_key(settings)

    def sign(objects: list[dict[str, Any]]) -> bytes:
        # The objects as taxii2-client parsed them: the bundle check refuses what cannot be
        # relayed (integers beyond 64 bits, NaN, deep nesting), no JSON round trip needed.
        bundle = {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": objects}
        try:
            return make_submission(
                bundle,
                org=org,
                key=key,
                to=to,
                feed=None,
                now=int(time.time()),
                max_bytes=settings.limits.max_bundle_bytes,
                max_objects=settings.limits.max_objects,
                source=url,
                via="taxii-pull",
            ).token
        except (SubmissionTooLarge, TooManyObjects) as exc:  # how much, not which: split
            raise Unsignable(str(exc), too_large=True) from exc
        except SubmissionError as exc:
            raise Unsignable(str(exc)) from exc

    state = (
        settings.data_dir
        / "taxii-pull"
        / f"{org}-{hashlib.sha256(url.encode()).hexdigest()[:16]}.json"
    )

    async def _run(js: JetStreamContext) -> PullStats:
        await ensure_streams(js, streams_for(settings))
        await ensure_directory_intake(js)

        async def publish(token: bytes) -> None:
            try:
                await js.publish(submit_subject(org), token, stream=submit_stream(org))
            except nats.js.errors.APIError as exc:
                if "maximum bytes" not in (exc.description or ""):
                    raise
                # Kept as pending by the poller: published again on the next pull.
                raise PullError(
                    f"{org} sent its allowance for a day (nats.intake_max_bytes): the rest "
                    "is submitted once older submissions age out of its intake"
                ) from exc

        collection = open_collection(url, user=user, password=password, ca_file=ca_file)
        poller = Poller(collection, state_path=state, sign=sign, publish=publish)
        total = PullStats()
        failures = 0
        try:
            while True:
                check_cancelled()
                try:
                    stats = await poller.pull_once()
                except PullError as exc:
                    if once:
                        raise
                    # The member's server is down or broken: try again next time, from
                    # the same cursor; the job itself keeps running.
                    failures += 1
                    delay = max(interval, min(2.0**failures, 300.0))
                    log.warning("pull.failed", org=org, error=str(exc), retry_in=delay)
                    await asyncio.sleep(delay)
                    continue
                failures = 0
                total.objects += stats.objects
                total.submissions += stats.submissions
                total.refused += stats.refused
                log.info("pull.done", org=org, objects=stats.objects, refused=stats.refused)
                if once:
                    return total
                await asyncio.sleep(interval)
        finally:
            collection.close()

    if js is not None:
        return await _run(js)
    async with nats_session(settings, embedded_ok=False, name=f"atlas-pull-{org}") as (_, js2):
        return await _run(js2)
