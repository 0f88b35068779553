"""The latency-distribution figure of a benchmark run (PNG, for the README)."""

from __future__ import annotations

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
