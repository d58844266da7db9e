"""``audit report --html``: one self-contained page an auditor can read and keep.

Inline CSS and SVG only — no script, no font, no image, nothing fetched from a network.
Every value taken from the log is HTML-escaped. Sections: the verification result (first,
and plain), totals, flows from originators to recipients by TLP, withheld and derived
objects by reason, and a timeline of decisions.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html import escape
from typing import Any

from ._auditor import Problem, VerifyResult

__all__ = ["ReportStats", "render_html"]

TLP_COLOURS = {
    "red": "#e0201b",
    "amber+strict": "#c77c00",
    "amber": "#ffb000",
    "green": "#2e9e35",
    "clear": "#8c8c8c",
}
TYPE_COLOURS = {
    "submission": "#4c72b0",
    "delivery": "#2e9e35",
    "withheld": "#e0201b",
    "derived": "#8172b2",
}
_OTHER = "#999999"


@dataclass
class ReportStats:
    flows: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    flow_objects: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    withheld: Counter[str] = field(default_factory=Counter)
    derived: Counter[str] = field(default_factory=Counter)
    withheld_by_recipient: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    accepted: int = 0
    types: Counter[str] = field(default_factory=Counter)
    minutes: dict[str, Counter[str]] = field(default_factory=dict)
    entries: int = 0
    unsigned: ReportStats | None = None
    """Entries after the last signed checkpoint, kept apart (only when keys were given)."""

    def add(self, entry: dict[str, Any]) -> None:
        self.entries += 1
        kind = str(entry.get("type"))
        self.types[kind] += 1
        src = entry.get("src")
        src = src if isinstance(src, dict) else {}
        originator = str(src.get("org") or entry.get("org") or "?")
        recipient = str(entry.get("rcpt") or "?")
        reason = str(entry.get("reason") or "unspecified")
        if kind == "submission":
            if entry.get("result") == "refused":
                self.refused[reason] += 1
            else:
                self.accepted += 1
        elif kind == "delivery":
            key = (originator, recipient, str(entry.get("tlp") or "none").lower())
            self.flows[key] += 1
            objects = entry.get("objects")
            delivered = objects.get("delivered") if isinstance(objects, dict) else None
            self.flow_objects[key] += delivered if isinstance(delivered, int) else 0
        elif kind == "withheld":
            self.withheld[reason] += 1
            self.withheld_by_recipient[recipient] += 1
        elif kind == "derived":
            self.derived[reason] += 1
        ts = entry.get("ts")
        if isinstance(ts, str) and len(ts) >= 16:
            self.minutes.setdefault(ts[:16], Counter())[kind] += 1


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _unsigned(stats: ReportStats, result: VerifyResult) -> str:
    tail = stats.unsigned
    if tail is None or not tail.entries:
        return ""
    counts = ", ".join(
        f"{n} {_e(kind)}" for kind, n in sorted(tail.types.items(), key=lambda kv: -kv[1])
    )
    return (
        '<section id="unsigned" class="banner unverified">'
        f"<h2>⚠ {tail.entries} entries are not verified</h2>"
        f"<p>They follow the last signed checkpoint (size {result.checkpointed_size}): no "
        "signature covers them, so nothing shows they were logged by the broker. In a live log "
        "they are usually recent decisions waiting for the next checkpoint; in an exported copy "
        "anyone who held the file could have added them. <strong>They are not counted in the "
        f"figures below.</strong> By type: {counts}.</p></section>"
    )


def _verification(result: VerifyResult | None, source: str) -> str:
    if result is None:
        return (
            '<section id="verification" class="banner unverified">'
            "<h2>Not verified</h2><p>No log key was given, so the checkpoints were not "
            "checked. Run <code>atlas-broker audit report --log-key …</code>.</p></section>"
        )
    facts = (
        f"<ul><li>{result.entries} entries read from {_e(source)}</li>"
        f"<li>{result.checkpoints} signed checkpoints, covering {result.checkpointed_size} "
        f"entries; {result.consistency_proofs} consistency proofs verified</li>"
        f"<li>{sum(result.cosignatures.values())} witness cosignatures"
        + (
            " (" + ", ".join(f"{_e(w)}: {n}" for w, n in sorted(result.cosignatures.items())) + ")"
            if result.cosignatures
            else ""
        )
        + f"</li><li>{result.unverified_tail} entries after the last checkpoint "
        "(not yet signed)</li>"
        + (
            f"<li>{result.deliveries_checked} stored packages matched to their entries"
            f" ({result.deliveries_pending} still being routed)</li>"
            if result.deliveries_checked or result.deliveries_pending
            else ""
        )
        + "</ul>"
    )
    if result.ok and result.entries and not result.checkpointed_size:
        return (
            '<section id="verification" class="banner unverified"><h2>Not verified</h2>'
            "<p>No signed checkpoint covers any entry of this log, so none of them is "
            f"verified.</p>{facts}</section>"
        )
    if result.ok and result.unverified_tail:
        return (
            '<section id="verification" class="banner ok"><h2>✔ Log verified up to entry '
            f"{result.checkpointed_size - 1}</h2><p>Every entry up to the last signed "
            "checkpoint matches it; nothing there was altered, dropped, reordered or "
            f"rewritten. The {result.unverified_tail} entries after it are not verified."
            f"</p>{facts}</section>"
        )
    if result.ok:
        return (
            '<section id="verification" class="banner ok"><h2>✔ Log verified</h2>'
            "<p>Every entry matches the signed checkpoints; nothing was altered, dropped, "
            f"reordered or rewritten.</p>{facts}</section>"
        )
    first = result.first_problem() or Problem(None, "unknown")
    where = f"at index {first.index}" if first.index is not None else ""
    rows = "".join(
        f"<li>{'' if p.index is None else f'index {p.index}: '}{_e(p.message)}</li>"
        for p in sorted(result.problems, key=lambda p: (p.index is None, p.index or 0))[:25]
    )
    return (
        '<section id="verification" class="banner fail">'
        f"<h2>✘ Verification FAILED {where}</h2><p><strong>{_e(first.message)}</strong></p>"
        f"{facts}<h3>Problems ({len(result.problems)})</h3><ol>{rows}</ol></section>"
    )


def _cards(stats: ReportStats) -> str:
    cards = [
        ("entries", stats.entries),
        ("submissions accepted", stats.accepted),
        ("submissions refused", sum(stats.refused.values())),
        ("packages delivered", sum(stats.flows.values())),
        ("objects withheld", sum(stats.withheld.values())),
        ("derived copies", sum(stats.derived.values())),
    ]
    return (
        '<section class="cards">'
        + "".join(
            f'<div class="card"><b>{n}</b><span>{_e(label)}</span></div>' for label, n in cards
        )
        + "</section>"
    )


def _flow_svg(stats: ReportStats) -> str:
    if not stats.flows:
        return "<p>No deliveries in this log.</p>"
    origins: Counter[str] = Counter()
    targets: Counter[str] = Counter()
    for (o, r, _), n in stats.flows.items():
        origins[o] += n
        targets[r] += n
    total = sum(stats.flows.values())
    height = max(240, 34 * max(len(origins), len(targets)))
    gap, width, left, right = 10.0, 860, 170, 690
    scale = (height - gap * (max(len(origins), len(targets)) + 1)) / total

    def positions(counts: Counter[str]) -> dict[str, float]:
        out, y = {}, gap
        for name in sorted(counts):
            out[name] = y
            y += counts[name] * scale + gap
        return out

    oy, ry = positions(origins), positions(targets)
    o_used: Counter[str] = Counter()
    r_used: Counter[str] = Counter()
    parts = [
        f'<svg id="flow-chart" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="Flows from originators to recipients by TLP">'
    ]
    for (o, r, tlp), n in sorted(stats.flows.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        w = n * scale
        y1 = oy[o] + o_used[o] * scale + w / 2
        y2 = ry[r] + r_used[r] * scale + w / 2
        o_used[o] += n
        r_used[r] += n
        mid = (left + right) / 2
        parts.append(
            f'<path d="M{left},{y1:.1f} C{mid},{y1:.1f} {mid},{y2:.1f} {right},{y2:.1f}" '
            f'stroke="{TLP_COLOURS.get(tlp, _OTHER)}" stroke-width="{max(w, 1.5):.1f}" '
            f'fill="none" opacity="0.65"><title>{_e(o)} → {_e(r)} TLP:{_e(tlp.upper())}: '
            f"{n} package(s)</title></path>"
        )
    for names, ys, x, anchor, tx in (
        (origins, oy, left - 8, "end", left - 14),
        (targets, ry, right, "start", right + 14),
    ):
        for name in sorted(names):
            h = names[name] * scale
            parts.append(
                f'<rect x="{x}" y="{ys[name]:.1f}" width="8" height="{h:.1f}" fill="#333"/>'
            )
            parts.append(
                f'<text x="{tx}" y="{ys[name] + h / 2 + 4:.1f}" text-anchor="{anchor}">'
                f"{_e(name)} ({names[name]})</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _flow_table(stats: ReportStats) -> str:
    rows = "".join(
        f"<tr><td>{_e(o)}</td><td>{_e(r)}</td>"
        f'<td><span class="tlp" style="background:{TLP_COLOURS.get(t, _OTHER)}">'
        f"TLP:{_e(t.upper())}</span></td><td>{n}</td><td>{stats.flow_objects[(o, r, t)]}</td></tr>"
        for (o, r, t), n in sorted(stats.flows.items())
    )
    return (
        '<table id="flows"><thead><tr><th>originator</th><th>recipient</th><th>TLP</th>'
        f"<th>packages</th><th>objects</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _bars(counts: Counter[str], colour: str, chart_id: str) -> str:
    if not counts:
        return f'<p id="{chart_id}">None.</p>'
    top = max(counts.values())
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    height = 26 * len(rows) + 10
    parts = [f'<svg id="{chart_id}" viewBox="0 0 860 {height}" role="img">']
    for i, (label, n) in enumerate(rows):
        y = 8 + 26 * i
        w = 520 * n / top
        parts.append(
            f'<text x="250" y="{y + 14}" text-anchor="end">{_e(label)}</text>'
            f'<rect x="260" y="{y}" width="{w:.1f}" height="18" fill="{colour}"/>'
            f'<text x="{266 + w:.1f}" y="{y + 14}">{n}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _buckets(
    minutes: dict[str, Counter[str]],
) -> tuple[list[str], dict[str, Counter[str]], str]:
    """Every bucket from first to last (empty ones too) at the finest unit giving <= 60."""
    try:
        first = datetime.fromisoformat(min(minutes) + ":00+00:00")
        last = datetime.fromisoformat(max(minutes) + ":00+00:00")
    except ValueError:
        return sorted(minutes), minutes, "entry time"
    seconds = (last - first).total_seconds()
    cut, unit, step = next(
        (
            choice
            for choice in ((16, "minute", 60), (13, "hour", 3600), (10, "day", 86400))
            if seconds / choice[2] < 60
        ),
        (7, "month", 0),
    )
    buckets: dict[str, Counter[str]] = {}
    for minute, counts in minutes.items():
        buckets.setdefault(minute[:cut], Counter()).update(counts)
    keys: list[str] = []
    moment = first
    while step and moment <= last:
        keys.append(moment.strftime("%Y-%m-%dT%H:%M")[:cut])
        moment += timedelta(seconds=step)
    if not step or keys[-1] != max(buckets):
        keys = sorted(set(keys) | set(buckets))
    return keys, {k: buckets.get(k, Counter()) for k in keys}, unit


def _timeline(stats: ReportStats) -> str:
    if not stats.minutes:
        return "<p>No timestamps.</p>"
    keys, buckets, unit = _buckets(stats.minutes)
    top = max(1, max(sum(c.values()) for c in buckets.values()))
    bar = 780 / len(keys)
    parts = [
        f'<svg id="timeline" viewBox="0 0 860 260" role="img" aria-label="Decisions per {unit}">'
    ]
    for i, key in enumerate(keys):
        y = 220.0
        for kind, n in sorted(buckets[key].items()):
            h = 200 * n / top
            y -= h
            parts.append(
                f'<rect x="{60 + i * bar:.1f}" y="{y:.1f}" width="{max(bar - 2, 1):.1f}" '
                f'height="{h:.1f}" fill="{TYPE_COLOURS.get(kind, _OTHER)}">'
                f"<title>{_e(key)} {_e(kind)}: {n}</title></rect>"
            )
    parts.append(
        f'<text x="60" y="245">{_e(keys[0])}</text>'
        f'<text x="840" y="245" text-anchor="end">{_e(keys[-1])}</text>'
        f'<text x="50" y="24" text-anchor="end">{top}</text></svg>'
    )
    legend = "".join(
        f'<span class="key" style="background:{c}"></span>{k} ' for k, c in TYPE_COLOURS.items()
    )
    return "".join(parts) + f'<p class="legend">per {unit}: {legend}</p>'


_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:960px;
padding:24px;color:#222;background:#fff}h1{font-size:24px;margin:0 0 4px}h2{margin:28px 0 8px}
.meta{color:#666}.banner{border-radius:8px;padding:12px 20px;margin:18px 0}
.banner h2{margin:4px 0}.ok{background:#e5f6e7;border:2px solid #2e9e35}
.fail{background:#fde8e7;border:2px solid #e0201b}.unverified{background:#fff5dc;
border:2px solid #ffb000}.cards{display:flex;flex-wrap:wrap;gap:10px}.card{flex:1 1 130px;
border:1px solid #ddd;border-radius:8px;padding:10px}.card b{display:block;font-size:22px}
.card span{color:#666;font-size:13px}svg{width:100%;height:auto;font-size:12px}
table{border-collapse:collapse;width:100%;margin-top:10px}td,th{border-bottom:1px solid #eee;
padding:4px 8px;text-align:left}.tlp{color:#000;padding:1px 6px;border-radius:4px;
font-size:12px}.key{display:inline-block;width:12px;height:12px;margin:0 4px 0 10px}
code{background:#f4f4f4;padding:1px 4px}
"""


def render_html(
    stats: ReportStats, result: VerifyResult | None, *, source: str, generated: str
) -> str:
    tlp_legend = "".join(
        f'<span class="key" style="background:{c}"></span>TLP:{t.upper()} '
        for t, c in TLP_COLOURS.items()
    )
    body = "".join(
        [
            "<h1>Atlas dissemination log — audit report</h1>",
            f'<p class="meta">Source: {_e(source)} · generated {_e(generated)}</p>',
            _verification(result, source),
            "" if result is None else _unsigned(stats, result),
            _cards(stats),
            "<h2>Flows: originators → recipients, by TLP</h2>",
            _flow_svg(stats),
            f'<p class="legend">{tlp_legend}</p>',
            _flow_table(stats),
            "<h2>Withheld objects, by reason</h2>",
            _bars(stats.withheld, TLP_COLOURS["red"], "withheld-chart"),
            "<h3>… and by recipient</h3>",
            _bars(stats.withheld_by_recipient, "#b5523b", "withheld-recipients-chart"),
            "<h2>Derived copies, by reason</h2>",
            _bars(stats.derived, "#8172b2", "derived-chart"),
            "<h2>Refused submissions, by reason</h2>",
            _bars(stats.refused, "#4c72b0", "refused-chart"),
            "<h2>Timeline</h2>",
            _timeline(stats),
        ]
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">"
        "<title>Atlas audit report</title>"
        f"<style>{_CSS}</style></head><body>{body}</body></html>\n"
    )
