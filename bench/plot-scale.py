"""Plots bench/scale.csv (written by `cargo bench --bench scale`) as a PNG: each figure
steward reports against the established loopback connections held on the host.
Usage: python3 bench/plot-scale.py [csv] [png]   (needs matplotlib)"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

src = sys.argv[1] if len(sys.argv) > 1 else "bench/scale.csv"
dst = sys.argv[2] if len(sys.argv) > 2 else "bench/scale.png"
with open(src) as f:
    rows = list(csv.DictReader(f))


def col(name):
    """(connections in thousands, value) for the rows where the figure was measured."""
    return [(int(r["connections"]) / 1000, float(r[name])) for r in rows if r[name] != ""]


# One panel per figure; a panel with two series compares the two health intervals or
# the median with the worst case.
panels = [
    ("false health failures in the window (200 ms interval)", "count", [("health_failures", "failures"), ("replacements", "child replaced")]),
    ("steward status round trip", "ms", [("status_p50_ms", "p50"), ("status_max_ms", "max")]),
    ("steward CPU while serving", "% of a core", [("cpu_pct_200ms", "health every 200 ms"), ("cpu_pct_2s", "health every 2 s")]),
    ("READY after the child's spawn", "ms", [("ready_ms_200ms_run", "run at 200 ms health"), ("ready_ms_2s_run", "run at 2 s health")]),
    ("drain overshoot after the last response", "ms", [("drain_overshoot_ms", "overshoot")]),
    ("idle stop (SIGTERM to exit)", "ms", [("idle_stop_ms", "idle stop")]),
]
fig, axes = plt.subplots(2, 3, figsize=(13, 7))
for ax, (title, unit, series) in zip(axes.flat, panels):
    for name, label in series:
        pts = col(name)
        if pts:
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=label)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(unit)
    ax.set_xlabel("host connections (thousands; 2 TCP sockets each)")
    ax.set_ylim(bottom=0)
    if unit == "count":
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(dst, dpi=90)
print(f"wrote {dst}")
