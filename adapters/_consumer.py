"""Binding to a durable pull consumer, creating it first when it does not exist."""

from __future__ import annotations

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

__all__ = ["durable_pull"]


async def durable_pull(
    js: JetStreamContext, stream: str, name: str, filter_subject: str, *, ack_wait: float = 60
) -> JetStreamContext.PullSubscription:
    """A pull subscription on durable ``name`` (explicit acks, from the start of ``stream``).

    The consumer is only created when missing, so a client whose permissions allow just
    INFO/NEXT/ACK on a consumer the broker created still binds to it.
    """
    try:
        await js.consumer_info(stream, name)
    except nats.js.errors.NotFoundError:
        await js.add_consumer(
            stream,
            ConsumerConfig(
                durable_name=name,
                name=name,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=ack_wait,
                filter_subject=filter_subject,
            ),
        )
    return await js.pull_subscribe_bind(name, stream=stream)
