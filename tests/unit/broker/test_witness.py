"""The witness's publishing and state, against a stub for the WITNESS stream's answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors
import orjson
import pytest
import structlog
from nats.js.api import PubAck
from structlog.testing import capture_logs

from broker._checkpoint import CheckpointMessage
from broker._note import NoteSigner
from broker._witness import (
    WITNESS_COSIGNATURES_KEPT,
    WITNESS_MAX_MSG_SIZE,
    WITNESS_STREAM,
    Witness,
    WitnessState,
    _handle,
    _limited,
    _NotStored,
    _witness_config,
    cosignature_subject,
)
from broker.errors import ConfigError, LogIntegrityError
from keys import PrivateKey
from tests.unit.broker.logfakes import ORIGIN, MemoryLog


@dataclass
class StubStream:
    """``js.publish`` answering as told: a PubAck (its ``duplicate`` flag) or an error."""

    duplicate: bool = False
    error: Exception | None = None
    published: list[tuple[str, bytes, dict[str, Any]]] = field(default_factory=list)

    async def publish(self, subject: str, payload: bytes = b"", **kw: Any) -> PubAck:
        self.published.append((subject, payload, kw))
        if self.error is not None:
            raise self.error
        return PubAck(stream=WITNESS_STREAM, seq=41, duplicate=self.duplicate)


@pytest.fixture
def log_signer() -> NoteSigner:
    return NoteSigner(ORIGIN, PrivateKey.generate("Ed25519"))


@pytest.fixture
def checkpoint(log_signer: NoteSigner) -> tuple[int, bytes]:
    return MemoryLog(log_signer, submissions=3).checkpoints[0]


@pytest.fixture
def make_witness(tmp_path: Path, log_signer: NoteSigner) -> Any:
    def _make(name: str = "witness.test/w1") -> Witness:
        return Witness(
            name=name,
            signing_key=PrivateKey.generate("Ed25519"),
            log_keys=[log_signer.verifier],
            state_path=tmp_path / "state.json",
            origin=ORIGIN,
        )

    return _make


@pytest.fixture
def logs() -> Any:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(0))
    with capture_logs() as captured:
        yield captured


class TestPublish:
    async def test_not_stored_when_the_server_answers_duplicate(
        self, make_witness: Any, checkpoint: tuple[int, bytes], logs: list[dict[str, Any]]
    ) -> None:
        witness = make_witness()
        stream = StubStream(duplicate=True)

        with pytest.raises(_NotStored):
            await _handle(stream, witness, *checkpoint)  # type: ignore[arg-type]

        assert [(e["event"], e["log_level"], e["seq"]) for e in logs] == [
            ("witness.publish_duplicate", "error", checkpoint[0])
        ]
        # Cosigned (the state moved on, so it is not cosigned against an older one), but
        # not marked stored: a restart publishes it again.
        on_disk = make_witness().state
        assert on_disk is not None and on_disk.checkpoint_seq == checkpoint[0]
        assert on_disk.witness_seq == 0

    async def test_stored_sequence_is_saved_when_the_server_stores_it(
        self, make_witness: Any, checkpoint: tuple[int, bytes]
    ) -> None:
        witness = make_witness()
        stream = StubStream()

        assert await _handle(stream, witness, *checkpoint) is True  # type: ignore[arg-type]

        ((subject, payload, kw),) = stream.published
        assert subject == cosignature_subject("witness.test/w1")
        assert kw == {"stream": WITNESS_STREAM}  # no Nats-Msg-Id another witness could claim
        assert orjson.loads(payload)["seq"] == checkpoint[0]
        on_disk = make_witness().state
        assert on_disk is not None and on_disk.witness_seq == 41

    @pytest.mark.parametrize(
        ("error", "event"),
        [
            (
                nats.js.errors.BadRequestError(
                    code=400, err_code=10054, description="message size exceeds maximum allowed"
                ),
                "witness.publish_refused",
            ),
            (nats.errors.TimeoutError(), "witness.publish_failed"),
        ],
    )
    async def test_not_stored_when_the_publish_fails(
        self,
        make_witness: Any,
        checkpoint: tuple[int, bytes],
        logs: list[dict[str, Any]],
        error: Exception,
        event: str,
    ) -> None:
        witness = make_witness()
        with pytest.raises(_NotStored):
            await _handle(StubStream(error=error), witness, *checkpoint)  # type: ignore[arg-type]
        assert [e["event"] for e in logs] == [event]
        assert witness.state is not None and witness.state.witness_seq == 0

    async def test_config_error_when_a_cosignature_cannot_fit_a_message(
        self, make_witness: Any, checkpoint: tuple[int, bytes]
    ) -> None:
        stream = StubStream()
        with pytest.raises(ConfigError, match="witness name \\(1000 characters\\)"):
            await _handle(stream, make_witness("w" * 1000), *checkpoint)  # type: ignore[arg-type]
        assert stream.published == []


class TestWitnessState:
    def test_witness_seq_is_zero_when_a_state_file_predates_it(
        self, make_witness: Any, checkpoint: tuple[int, bytes], tmp_path: Path
    ) -> None:
        witness = make_witness()
        message_seq, data = checkpoint
        witness.cosign(CheckpointMessage.decode(data, seq=message_seq))
        doc = orjson.loads((tmp_path / "state.json").read_bytes())
        del doc["witness_seq"]
        (tmp_path / "state.json").write_bytes(orjson.dumps(doc))

        loaded = WitnessState.load(tmp_path / "state.json")

        assert loaded is not None and loaded.witness_seq == 0
        assert loaded.checkpoint_seq == message_seq

    @pytest.mark.parametrize("content", [b"[]", b'"text"', b"42"])
    def test_damaged_when_the_state_file_is_not_an_object(
        self, tmp_path: Path, content: bytes
    ) -> None:
        (tmp_path / "state.json").write_bytes(content)
        with pytest.raises(LogIntegrityError, match="damaged"):
            WitnessState.load(tmp_path / "state.json")


class TestStreamConfig:
    def test_limits_are_per_witness_when_the_stream_is_configured(self) -> None:
        config = _witness_config(3)
        assert config.max_msg_size == WITNESS_MAX_MSG_SIZE
        assert config.max_msgs_per_subject == WITNESS_COSIGNATURES_KEPT
        # Nothing stream-wide that one witness could fill to refuse or drop another's.
        assert config.max_bytes is None and config.max_msgs is None
        assert not config.discard_new_per_subject
        assert config.duplicate_window is not None and config.duplicate_window <= 1.0
        assert config.deny_delete and config.deny_purge and config.num_replicas == 3
        assert _limited(config)

    def test_not_limited_when_the_stream_predates_the_limits(self) -> None:
        config = _witness_config(1)
        config.max_msg_size = -1
        assert not _limited(config)
