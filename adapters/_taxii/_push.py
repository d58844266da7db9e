"""Pushing opened bundles into a partner's own TAXII 2.1 server (taxii2-client).

The receive bridge calls the pusher after opening a package and acks only once it
returned: the partner's server must report every object as a success.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import requests
from taxii2client.exceptions import TAXIIServiceException

from .._errors import BridgeError
from ._client import open_collection

__all__ = ["taxii_pusher"]


def taxii_pusher(
    url: str,
    *,
    user: str | None,
    password: str | None,
    timeout: float = 60.0,
    ca_file: Path | None = None,
) -> Callable[[dict[str, Any]], Awaitable[None]]:
    """A coroutine function that adds a bundle's objects to the collection at ``url``
    (over HTTPS trusting only ``ca_file`` when given)."""

    def _push(bundle: dict[str, Any]) -> None:
        objects = bundle.get("objects", [])
        if not objects:
            return
        try:
            with open_collection(url, user=user, password=password, ca_file=ca_file) as collection:
                status = collection.add_objects(
                    {"objects": objects}, poll_interval=1, timeout=int(timeout)
                )
        except (requests.RequestException, TAXIIServiceException) as exc:
            raise BridgeError(f"push to {url} failed: {exc}") from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # taxii2-client reading an answer that is not TAXII 2.1
            raise BridgeError(
                f"push to {url} failed: the answer is not TAXII 2.1 ({type(exc).__name__}: {exc})"
            ) from exc
        if status.status != "complete" or status.success_count != len(objects):
            raise BridgeError(
                f"push to {url}: {status.success_count} of {len(objects)} object(s) succeeded "
                f"(status {status.status}, {status.failure_count} failed)"
            )

    async def push(bundle: dict[str, Any]) -> None:
        await asyncio.to_thread(_push, bundle)

    return push
