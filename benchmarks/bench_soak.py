"""Soak: sustained submissions at half the measured maximum, memory and latency sampled.

The broker runs as a real ``atlas-broker serve`` process against a nats-server started
here (fsync always). First its maximum is measured: a burst of stored submissions and the
time the router takes to drain them. Then an open-loop publisher submits at half that rate
for the whole duration (10 minutes by default; ``--quick``: 40 s), and every 10 s a sample
records the broker's and nats-server's resident memory, the latency percentiles of that
window (submit acknowledged -> the last recipient's package stored) and the router's
backlog. The summary says whether memory stayed flat (growth over the second half) and
p99 stable: the worst window against the median window, the median window of each half
(drift of the typical window, apart from rare outliers) and how many windows were over
twice the median. ``GOGC``/``GOMEMLIMIT`` in the environment reach the nats-server started
here (else the embedded server's defaults apply: ``broker._embedded``); ``nats_go_runtime``
says which ran.

To tell where a latency tail comes from, each window also has the p99 of the submit's
publish acknowledgement (nats-server's write path alone), the CPU milliseconds the broker
and nats-server spent per completed submission (work per message growing, or not), and
per stream the number of subjects and interior deletes (the state nats-server's periodic
index writes walk), and the broker's cycle-collector pauses in the window (from its
``atlas_gc_pause_seconds`` metric): full collections, milliseconds paused in all, and
pauses over 50 ms.

The store's disk is measured beside it: a thread in this process writes 4 KiB and fsyncs
it every 100 ms in the folder of nats-server's store, and each window records that
probe's p99 and worst fsync and how many took over 50 ms. nats-server fsyncs every write
(as the broker runs it), so a disk whose fsync stalls stalls every submission in flight;
``p99_spike_windows_with_fsync_stall`` says how many of the windows whose p99 was over
twice the median also saw the probe stall.

nats-server runs with ``GODEBUG=gctrace=1`` (one line per garbage collection on its
stderr), and each window records its collections, the longest concurrent mark phase and
the live heap after the last one (it grows with what the store retains, and the mark
phases with it).
``p99_spike_windows_with_nats_mark_over_100ms`` counts the spike windows that had one.

Run alone: ``python -m benchmarks soak``; ``ATLAS_SOAK_SECONDS`` overrides the duration,
``ATLAS_SOAK_RATE`` the sustained rate (submissions/s; the maximum is still measured and
reported, so two runs, of two versions, can be compared at one rate) and
``ATLAS_SOAK_STORE`` the folder under which the run's store is made (``/dev/shm`` puts it
in memory, where fsync returns at once: the broker's and nats-server's own tail, without
the disk's).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import orjson
from prometheus_client.parser import text_string_to_metric_families

from broker._bus import ensure_streams, submit_subject
from broker._config import Settings
from broker._directory_store import store_directory
from broker._embedded import EmbeddedNats
from broker._feeds import route_consumers, router_backlog
from broker._service import streams_for
from broker._submission import make_submission
from keys import PrivateKey, load_private_key

from .bench_pipeline import RECIPIENTS, _bundle, _community, _pct

SAMPLE_EVERY = 10.0
OBJECTS = 10
STREAM_BYTES = 3 * 1024**3
INTAKE_BYTES = 512 * 1024**2
"""A submission here is 5.8 KB and the run sends up to ~65,000 in 10 minutes (~400 MB with
their overhead; 384 MiB overflowed). nats-server reserves every organisation's two intakes
at this size on the store's disk."""


def _rss_mib(pid: int) -> float:
    """Resident set size from /proc (Linux), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s(pid: int | None) -> float:
    """User plus system CPU time of ``pid`` so far, from /proc (Linux), in seconds."""
    if not pid:
        return float("nan")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _sign(key: PrivateKey, settings: Settings) -> tuple[str, bytes]:
    signed = make_submission(
        orjson.dumps(_bundle(OBJECTS)),
        org="member-1",
        key=key,
        to=(),
        feed=None,
        now=int(time.time()),
        max_bytes=settings.limits.max_bundle_bytes,
        max_objects=settings.limits.max_objects,
    )
    return signed.sid, signed.token


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


async def _soak(
    root: Path, duration: float, burst: int, fixed_rate: float | None
) -> dict[str, Any]:
    directory, broker_key_path = _community(root / "keys")
    member_key = load_private_key(root / "keys" / "member-1" / "member-1.sign.pem")
    # 3 GiB per stream (the default 8 GiB twice needs 22 GB free on the store's disk; a
    # 10-minute soak writes about 1.5 GB of packages), and the intakes (2 per organisation)
    # must fit beside them: nats-server reserves every maximum, and serve's update of a
    # stream reserves it once more while it runs (4 GiB did not fit /dev/shm's 24 GB).
    # One member makes every submission: its intake (32 MiB a day by default) takes the
    # whole run's.
    settings = Settings(
        data_dir=root / "data",
        log_level="error",
        nats={"stream_max_bytes": STREAM_BYTES, "intake_max_bytes": INTAKE_BYTES},
    )
    # nats-server inherits the environment (so does the broker, which ignores GODEBUG).
    gctrace = ",".join(filter(None, [os.environ.get("GODEBUG"), "gctrace=1"]))
    with _env(GODEBUG=gctrace):
        async with EmbeddedNats(root / "nats", publish_url=False) as server:
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            await ensure_streams(js, streams_for(settings))
            await store_directory(js, directory)
            env = {
                **os.environ,
                "ATLAS_NATS__URL": server.url,
                "ATLAS_DATA_DIR": str(root / "data"),
                "ATLAS_BROKER__SIGNING_KEY": str(broker_key_path),
                "ATLAS_LOG_LEVEL": "warning",
                "ATLAS_LOG_FORMAT": "json",
                "ATLAS_MONITOR__PORT": "0",
                "ATLAS_NATS__STREAM_MAX_BYTES": str(STREAM_BYTES),
                "ATLAS_NATS__INTAKE_MAX_BYTES": str(INTAKE_BYTES),
            }
            broker = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "broker",
                "serve",
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=(root / "serve.log").open("wb"),
            )
            try:
                with FsyncProbe(root) as probe:
                    return await _measure(
                        nc,
                        js,
                        broker.pid,
                        server,
                        member_key,
                        settings,
                        (duration, burst, fixed_rate),
                        probe,
                    )
            except Exception as exc:
                if broker.returncode is not None:
                    tail = (root / "serve.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(
                        f"atlas-broker serve exited ({broker.returncode}):\n{tail}"
                    ) from exc
                raise
            finally:
                if broker.returncode is None:
                    broker.terminate()
                await broker.wait()
                await nc.close()


async def _measure(
    nc: Any,
    js: Any,
    broker_pid: int,
    server: EmbeddedNats,
    key: PrivateKey,
    settings: Settings,
    plan: tuple[float, int, float | None],
    probe: FsyncProbe,
) -> dict[str, Any]:
    duration, burst, fixed_rate = plan
    monitor_url = Path(settings.data_dir) / "monitor" / "url"
    async with asyncio.timeout(60):
        # serve has started: its monitor listens and member-1's routing consumer exists.
        while not (monitor_url.exists() and "member-1" in await route_consumers(js)):  # noqa: ASYNC110 - polls server state
            await asyncio.sleep(0.1)
    # 1. The maximum: a burst of stored submissions, drained by the router.
    tokens = [_sign(key, settings)[1] for _ in range(burst)]
    t0 = time.perf_counter()
    for token in tokens:
        await js.publish(submit_subject("member-1"), token)
    while not (await router_backlog(js)).drained(burst):  # noqa: ASYNC110 - polls server state
        await asyncio.sleep(0.02)
    max_rate = burst / (time.perf_counter() - t0)
    rate = fixed_rate or max_rate / 2

    # 2. Sustained at half of it, open loop: a slow broker shows up as latency and backlog.
    sent_at: dict[str, float] = {}
    arrivals: dict[str, int] = {}
    window: list[float] = []
    acks: list[float] = []

    async def _on_delivery(msg: Any) -> None:
        sid = msg.subject.rsplit(".", 1)[-1]
        arrivals[sid] = arrivals.get(sid, 0) + 1
        if arrivals[sid] == RECIPIENTS and sid in sent_at:
            window.append((time.perf_counter() - sent_at.pop(sid)) * 1000)
            del arrivals[sid]

    sub = await nc.subscribe("atlas.deliver.>", cb=_on_delivery)
    samples: list[dict[str, Any]] = []
    interval = 1 / rate
    cpu = {"broker": _cpu_s(broker_pid), "nats": _cpu_s(server.pid)}
    gc_seen = await _gc_pauses(settings)
    probe.take()  # the sustained phase's windows only
    go_gc = GoGcTrace(server.store_dir.parent / "nats-server.stderr")
    go_gc.take()
    start = time.perf_counter()
    next_sample = start + SAMPLE_EVERY
    sent = 0
    while (now := time.perf_counter()) - start < duration:
        due = start + sent * interval
        if due > now:
            await asyncio.sleep(due - now)
        sid, token = _sign(key, settings)
        sent_at[sid] = published = time.perf_counter()
        await js.publish(submit_subject("member-1"), token)
        acks.append((time.perf_counter() - published) * 1000)
        sent += 1
        if time.perf_counter() >= next_sample:
            next_sample += SAMPLE_EVERY
            sample = await _sample(nc, js, broker_pid, server, start, sent, window, acks, cpu)
            sample["disk_fsync"] = probe.take()
            sample["nats_gc"] = go_gc.take()
            gc_now = await _gc_pauses(settings)
            sample["broker_gc"] = {k: round(gc_now[k] - gc_seen[k], 1) for k in gc_now}
            gc_seen = gc_now
            samples.append(sample)
            window, acks = [], []
    async with asyncio.timeout(120):
        while sent_at:  # noqa: ASYNC110 - the last submissions arrive
            await asyncio.sleep(0.1)
    await sub.unsubscribe()
    # The Go runtime settings nats-server ran with (the embedded server's, or the caller's).
    return {"nats_go_runtime": server.go_runtime} | _summary(
        max_rate, rate, duration, sent, samples
    )


async def _sample(
    nc: Any,
    js: Any,
    broker_pid: int,
    server: EmbeddedNats,
    start: float,
    sent: int,
    window: list[float],
    acks: list[float],
    cpu: dict[str, float],
) -> dict[str, Any]:
    """One window's figures; ``cpu`` holds each process's CPU seconds at the window's start
    and is moved on to its end."""
    backlog = await router_backlog(js)
    nats_pid = server.pid
    now = {"broker": _cpu_s(broker_pid), "nats": _cpu_s(nats_pid)}
    per_sub = {
        name: round((now[name] - cpu[name]) * 1000 / len(window), 2) if window else None
        for name in now
    }
    cpu.update(now)
    # What nats-server's periodic index writes walk: per-subject state and interior deletes.
    # (nats-py's StreamState drops num_subjects, so the API is asked directly.)
    streams = {}
    for stream in await js.streams_info():
        name = stream.config.name
        reply = await nc.request(f"$JS.API.STREAM.INFO.{name}", b"", timeout=5)
        state = orjson.loads(reply.data)["state"]
        streams[name] = [state.get("num_subjects", 0), state.get("num_deleted", 0)]
    return {
        "t_s": round(time.perf_counter() - start, 1),
        "submitted": sent,
        "broker_rss_mib": round(_rss_mib(broker_pid), 1),
        "nats_rss_mib": round(_rss_mib(nats_pid), 1) if nats_pid else None,
        "completed_in_window": len(window),
        "latency_ms_p50": round(statistics.median(window), 1) if window else None,
        "latency_ms_p99": round(_pct(window, 99), 1) if window else None,
        "publish_ack_ms_p99": round(_pct(acks, 99), 1) if acks else None,
        "broker_cpu_ms_per_submission": per_sub["broker"],
        "nats_cpu_ms_per_submission": per_sub["nats"],
        "router_backlog": backlog.pending + backlog.ack_pending,
        "stream_subjects_and_deletes": streams,
    }


async def _gc_pauses(settings: Settings) -> dict[str, float]:
    """The broker's cycle-collector pauses so far, from its /metrics."""
    url = (Path(settings.data_dir) / "monitor" / "url").read_text().strip()

    def fetch() -> str:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as reply:  # noqa: S310
            return str(reply.read().decode())

    totals = {"full_collections": 0.0, "paused_ms": 0.0, "pauses_over_50ms": 0.0}
    for family in text_string_to_metric_families(await asyncio.to_thread(fetch)):
        if family.name != "atlas_gc_pause_seconds":
            continue
        for sample in family.samples:
            generation = sample.labels.get("generation")
            if sample.name.endswith("_sum"):
                totals["paused_ms"] += sample.value * 1000
            elif sample.name.endswith("_count") and generation == "2":
                totals["full_collections"] += sample.value
            elif sample.name.endswith("_bucket") and sample.labels.get("le") == "0.05":
                totals["pauses_over_50ms"] -= sample.value
            elif sample.name.endswith("_bucket") and sample.labels.get("le") == "+Inf":
                totals["pauses_over_50ms"] += sample.value
    return totals


class FsyncProbe:
    """Writes 4 KiB and fsyncs it every ``every`` seconds in ``folder``, from a thread."""

    def __init__(self, folder: Path, every: float = 0.1) -> None:
        self._path = folder / "fsync-probe"
        self._every = every
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._window: list[float] = []
        self._thread = threading.Thread(target=self._run, name="fsync-probe", daemon=True)

    def _run(self) -> None:
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            while not self._stop.wait(self._every):
                os.pwrite(fd, b"p" * 4096, 0)
                t0 = time.perf_counter()
                os.fsync(fd)
                with self._lock:
                    self._window.append((time.perf_counter() - t0) * 1000)
        finally:
            os.close(fd)
            self._path.unlink(missing_ok=True)

    def __enter__(self) -> FsyncProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def take(self) -> dict[str, float | int | None]:
        """This window's figures (milliseconds), and a new window."""
        with self._lock:
            window, self._window = self._window, []
        return {
            "fsyncs": len(window),
            "p99_ms": round(_pct(window, 99), 2) if window else None,
            "max_ms": round(max(window), 1) if window else None,
            "over_50ms": sum(v > 50 for v in window),
        }


_GCTRACE = re.compile(
    rb"^gc \d+ @[\d.]+s \d+%: [\d.]+\+([\d.]+)\+[\d.]+ ms clock.*?->[\d]+->([\d]+) MB",
    re.MULTILINE,
)


class GoGcTrace:
    """nats-server's ``gctrace`` lines, read window by window from its stderr file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0

    def take(self) -> dict[str, float | int | None]:
        try:
            with self._path.open("rb") as fh:
                fh.seek(self._offset)
                text = fh.read()
        except FileNotFoundError:
            text = b""
        end = text.rfind(b"\n") + 1  # a line still being written waits for the next window
        self._offset += end
        found = [(float(mark), int(live)) for mark, live in _GCTRACE.findall(text[:end])]
        return {
            "collections": len(found),
            "mark_ms_max": max((mark for mark, _ in found), default=None),
            "live_heap_mb": found[-1][1] if found else None,
        }


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def _summary(
    max_rate: float, rate: float, duration: float, sent: int, samples: list[dict[str, Any]]
) -> dict[str, Any]:
    half = samples[len(samples) // 2 :] or samples
    rss = [s["broker_rss_mib"] for s in half]
    p99s = [s["latency_ms_p99"] for s in samples if s["latency_ms_p99"] is not None]
    typical = statistics.median(p99s) if p99s else 0.0
    spikes = [s for s in samples if (s["latency_ms_p99"] or 0.0) > 2 * typical]
    return {
        "objects_per_bundle": OBJECTS,
        "recipients": RECIPIENTS,
        "max_submissions_per_s": round(max_rate, 1),
        "sustained_rate_per_s": round(rate, 1),
        "duration_s": duration,
        "submitted": sent,
        "achieved_rate_per_s": round(sent / duration, 1),
        "broker_rss_mib_second_half_first_last": [rss[0], rss[-1]] if rss else None,
        "broker_rss_growth_second_half_pct": (
            round((rss[-1] - rss[0]) / rss[0] * 100, 1) if rss else None
        ),
        "p99_ms_median_window": round(statistics.median(p99s), 1) if p99s else None,
        "p99_ms_worst_window": max(p99s) if p99s else None,
        "p99_worst_over_median": (round(max(p99s) / statistics.median(p99s), 2) if p99s else None),
        # Drift (the typical window getting slower) apart from rare outlier windows.
        "p99_ms_median_window_first_half": _median(p99s[: len(p99s) // 2]),
        "p99_ms_median_window_second_half": _median(p99s[len(p99s) // 2 :]),
        "p99_windows_over_twice_the_median": len(spikes),
        "p99_spike_windows_with_fsync_stall": sum(s["disk_fsync"]["over_50ms"] > 0 for s in spikes),
        "p99_spike_windows_with_nats_mark_over_100ms": sum(
            (s["nats_gc"]["mark_ms_max"] or 0.0) > 100 for s in spikes
        ),
        "nats_gc_mark_ms_max_first_last_window": [
            samples[0]["nats_gc"]["mark_ms_max"] if samples else None,
            samples[-1]["nats_gc"]["mark_ms_max"] if samples else None,
        ],
        "windows_with_fsync_stall": sum(s["disk_fsync"]["over_50ms"] > 0 for s in samples),
        "disk_fsync_worst_ms": max(
            (s["disk_fsync"]["max_ms"] or 0.0 for s in samples), default=None
        ),
        "broker_gc_pauses_over_50ms": sum(s["broker_gc"]["pauses_over_50ms"] for s in samples),
        "broker_gc_full_collections": sum(s["broker_gc"]["full_collections"] for s in samples),
        "samples": samples,
    }


def run(quick: bool = False) -> dict[str, Any]:
    duration = float(os.environ.get("ATLAS_SOAK_SECONDS", 40 if quick else 600))
    burst = 100 if quick else 300
    store = os.environ.get("ATLAS_SOAK_STORE") or None
    rate = os.environ.get("ATLAS_SOAK_RATE")
    fixed_rate = float(rate) if rate else None
    if fixed_rate is not None and fixed_rate <= 0:
        raise ValueError(f"ATLAS_SOAK_RATE must be a positive number, not {rate!r}")
    with tempfile.TemporaryDirectory(prefix="atlas-soak-", dir=store) as tmp:
        figures = asyncio.run(_soak(Path(tmp), duration, burst, fixed_rate))
        return {"store": tmp, "rate_fixed_by_env": fixed_rate is not None} | figures
