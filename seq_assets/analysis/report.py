"""``seqctl report``: one self-contained HTML page about a day of the lake, with plotly plots.

    from seq_assets.analysis.report import write_report
    write_report("2026-03-02", "report.html")

Four plots, each computed with DuckDB over the lake views (the queries of ``seq_assets.analysis.queries``,
which take their columns from the compiled definitions, so any project's lake renders):
sequence length histogram per feature, events per hour per event type, late-arrival lag per day
(the days up to the report day), and enrichment coverage per event type. plotly.js is inlined once,
so the page opens offline.
"""

from __future__ import annotations

import html
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl

from seq_assets.core.compiled import Compiled
from seq_assets.storage.lake import Lake

PLOTS = {
    "sequence-lengths": "Sequence length histogram",
    "events-per-hour": "Events per hour per event type",
    "late-arrival-lag": "Late-arrival lag",
    "coverage": "Enrichment coverage",
}

_LAYOUT = dict(template="plotly_white", height=420, margin=dict(l=60, r=20, t=50, b=50),
               legend=dict(orientation="h", y=-0.2))


def _day(d) -> date:
    return d if isinstance(d, date) else date.fromisoformat(str(d)[:10])


def report_data(day, lake: Lake, compiled: Compiled, history_days: int = 7) -> dict:
    """The frames behind the plots: the report day, and ``history_days`` days up to it for the lag."""
    from seq_assets.analysis.queries import (
        enrichment_coverage,
        events_per_hour,
        late_arrival_lag,
        late_events_recorded,
        sequence_lengths,
    )
    from seq_assets.storage.sql import connect

    day = _day(day)
    history = [day - timedelta(days=i) for i in range(history_days - 1, -1, -1)]
    conn = connect(lake, tables=("sequences", "events", "raw", "metrics"))
    try:
        return {
            "day": day,
            "sequence_lengths": sequence_lengths(conn, compiled, [day]),
            "events_per_hour": events_per_hour(conn, compiled, [day]),
            "late_arrival_lag": late_arrival_lag(conn, compiled, history),
            "late_events_recorded": late_events_recorded(conn, history),
            "enrichment_coverage": enrichment_coverage(conn, compiled, [day]),
        }
    finally:
        conn.close()


def _figures(data: dict, compiled: Compiled) -> dict:
    import plotly.graph_objects as go

    figs = {}
    # 1. sequence length histogram, one trace per feature
    fig = go.Figure()
    sl = data["sequence_lengths"]
    for feature in compiled.features:
        d = sl.filter(pl.col("feature") == feature).sort("length")
        if d.height:
            fig.add_trace(go.Bar(x=d["length"].to_list(), y=d["users"].to_list(), name=feature, opacity=0.75))
    fig.update_layout(title=f"{PLOTS['sequence-lengths']} ({data['day']})", barmode="overlay",
                      xaxis_title="events in the sequence", yaxis_title="users", bargap=0, **_LAYOUT)
    figs["sequence-lengths"] = fig

    # 2. events per hour of event time, one trace per event type
    fig = go.Figure()
    eph = data["events_per_hour"]
    for et in compiled.event_types:
        d = eph.filter(pl.col("event_type") == et)
        counts = dict(zip(d["hour"].to_list(), d["events"].to_list()))
        fig.add_trace(go.Scatter(x=list(range(24)), y=[counts.get(h, 0) for h in range(24)], name=et,
                                 mode="lines+markers"))
    fig.update_layout(title=f"{PLOTS['events-per-hour']} ({data['day']}, UTC)", xaxis_title="hour (UTC)",
                      yaxis_title="events", xaxis=dict(dtick=2), **_LAYOUT)
    figs["events-per-hour"] = fig

    # 3. late-arrival lag: events per event day, stacked by how many days after it they arrived
    fig = go.Figure()
    lag = data["late_arrival_lag"].group_by("date", "lag_days").agg(pl.col("events").sum()).sort("date", "lag_days")
    for lag_days in sorted(set(lag["lag_days"].to_list())):
        d = lag.filter(pl.col("lag_days") == lag_days)
        label = "same day" if lag_days == 0 else f"{lag_days} day{'s' if abs(lag_days) != 1 else ''} late"
        fig.add_trace(go.Bar(x=[str(x) for x in d["date"].to_list()], y=d["events"].to_list(), name=label))
    rec = data["late_events_recorded"].group_by("date").agg(pl.col("late_events").sum()).sort("date")
    if rec.height:
        fig.add_trace(go.Scatter(x=[str(x) for x in rec["date"].to_list()], y=rec["late_events"].to_list(),
                                 name="late events recorded by the stream", mode="lines+markers"))
    fig.update_layout(title=f"{PLOTS['late-arrival-lag']}: events by delivery delay, per event day",
                      barmode="stack", xaxis_title="event day", yaxis_title="events", xaxis=dict(type="category"),
                      **_LAYOUT)
    figs["late-arrival-lag"] = fig

    # 4. enrichment coverage per column, one trace per event type, with the required minimum
    fig = go.Figure()
    cov = data["enrichment_coverage"]
    for et in compiled.event_types:
        d = cov.filter(pl.col("event_type") == et).sort("column")
        if d.height:
            fig.add_trace(go.Bar(x=d["column"].to_list(), y=d["coverage"].to_list(), name=et))
    mins = cov.group_by("column").agg(pl.col("min_coverage").first()).drop_nulls().sort("column")
    if mins.height:
        fig.add_trace(go.Scatter(x=mins["column"].to_list(), y=mins["min_coverage"].to_list(), name="min_coverage",
                                 mode="markers", marker=dict(symbol="line-ew-open", size=40, line=dict(width=3))))
    fig.update_layout(title=f"{PLOTS['coverage']} ({data['day']})", barmode="group", yaxis=dict(range=[0, 1.05]),
                      xaxis_title="enrichment column", yaxis_title="share of events with a value", **_LAYOUT)
    figs["coverage"] = fig
    return figs


def _summary_rows(data: dict) -> list[tuple[str, str]]:
    sl, eph, lag = data["sequence_lengths"], data["events_per_hour"], data["late_arrival_lag"]
    rows = []
    for feature, users in sl.group_by("feature").agg(pl.col("users").sum()).sort("feature").iter_rows():
        rows.append((f"users with a sequence in {feature}", f"{users:,}"))
    for et, n in eph.group_by("event_type").agg(pl.col("events").sum()).sort("event_type").iter_rows():
        rows.append((f"{et} events", f"{n:,}"))
    today = lag.filter(pl.col("date") == data["day"])
    total = int(today["events"].sum() or 0)
    late = int(today.filter(pl.col("lag_days") >= 1)["events"].sum() or 0)
    rows.append(("raw events of the day arriving a day or more late", f"{late:,} of {total:,}"
                 + (f" ({late / total:.1%})" if total else "")))
    below = data["enrichment_coverage"].filter(pl.col("coverage") < pl.col("min_coverage"))
    rows.append(("enrichment columns below min_coverage", str(below.height) if below.height == 0 else
                 ", ".join(f"{a}.{b} {c:.1%}" for a, b, c in below.select("event_type", "column", "coverage").iter_rows())))
    return rows


def render_report(data: dict, compiled: Compiled, lake_uri: str = "") -> str:
    """The HTML page: a summary table and the four plots, plotly.js inlined once."""
    from plotly.offline import get_plotlyjs

    figs = _figures(data, compiled)
    parts = []
    for key, fig in figs.items():
        div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{key}", default_height="440px",
                          config={"displaylogo": False})
        parts.append(f'<section class="plot" id="{key}"><h2>{html.escape(PLOTS[key])}</h2>{div}</section>')
    summary = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in _summary_rows(data))
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>seqplat report {data['day']}</title>
<style>
body {{ font-family: system-ui, -apple-system, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }}
h1 {{ font-size: 1.6rem; margin-bottom: .2rem; }}
.sub {{ color: #666; margin-top: 0; }}
table.summary {{ border-collapse: collapse; margin: 1rem 0 2rem; }}
table.summary th, table.summary td {{ text-align: left; padding: .25rem 1rem .25rem 0; border-bottom: 1px solid #eee; }}
table.summary th {{ font-weight: 500; color: #555; }}
section.plot {{ margin-bottom: 2.5rem; }}
h2 {{ font-size: 1.15rem; margin-bottom: .3rem; }}
</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head>
<body>
<h1>seqplat: {data['day']}</h1>
<p class="sub">lake {html.escape(lake_uri)} &middot; generated {generated}</p>
<table class="summary">{summary}</table>
{''.join(parts)}
</body>
</html>
"""


def write_report(day, out: str | Path, lake: Lake, compiled: Compiled) -> Path:
    page = render_report(report_data(day, lake, compiled), compiled, lake.root)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
