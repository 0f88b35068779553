"""The latency-distribution figure of a benchmark run (PNG, for the README)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a server

import matplotlib.pyplot as plt


def plot_latencies(latencies: dict[str, list[float]], path: Path, title: str) -> None:
    """One cumulative distribution per scenario on a log axis: backlog scenarios (latency counts time
    queued in Kafka) and the live 1,000/s run differ by orders of magnitude and must share a figure."""
    figure, axis = plt.subplots(figsize=(10, 5.5), dpi=110)
    for name, values in sorted(latencies.items()):
        ordered = sorted(max(v, 0.01) for v in values)
        if not ordered:
            continue
        step = max(1, len(ordered) // 4000)
        xs = [*ordered[::step], ordered[-1]]
        ys = [*(i * step / len(ordered) for i in range(len(xs) - 1)), 1.0]
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        axis.plot(xs, ys, label=f"{name} (p99 {_ms(p99)})", linewidth=1.6)
    axis.set_xscale("log")
    axis.set_xlabel("latency, event timestamp to receipt (ms, log scale)")
    axis.set_ylabel("share of events delivered")
    axis.axhline(0.99, color="grey", linewidth=0.6, linestyle=":")
    axis.grid(True, which="both", alpha=0.25)
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _ms(value: float) -> str:
    return f"{value / 1000:.1f} s" if value >= 1000 else f"{value:.0f} ms"


def plot_curve(points: Sequence[tuple[float, float, float]], path: Path, title: str, xlabel: str) -> None:
    """A cost curve: events/s (left axis) and CPU-seconds per 1,000 events (right axis) against the
    varied quantity (log axis), from (x, events_per_s, cpu_s_per_1000_events) points."""
    figure, rate_axis = plt.subplots(figsize=(8, 4.5), dpi=110)
    xs = [p[0] for p in points]
    rate_axis.plot(xs, [p[1] for p in points], marker="o", color="tab:blue", label="events/s")
    rate_axis.set_xscale("log")
    rate_axis.set_xlabel(xlabel)
    rate_axis.set_ylabel("events delivered per second", color="tab:blue")
    cpu_axis = rate_axis.twinx()
    cpu_axis.plot(xs, [p[2] for p in points], marker="s", color="tab:red", label="CPU s / 1,000 events")
    cpu_axis.set_ylabel("relay CPU-seconds per 1,000 events", color="tab:red")
    rate_axis.grid(True, which="both", alpha=0.25)
    rate_axis.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_rss(points: Sequence[tuple[float, float]], path: Path, title: str) -> None:
    """Peak RSS (MB) against the backlog size (jobs), both on log axes."""
    figure, axis = plt.subplots(figsize=(8, 4.5), dpi=110)
    axis.plot([p[0] for p in points], [p[1] for p in points], marker="o")
    axis.set_xscale("log")
    axis.set_xlabel("jobs waiting in the store (endpoint down)")
    axis.set_ylabel("relay peak RSS (MB)")
    axis.grid(True, which="both", alpha=0.25)
    axis.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
