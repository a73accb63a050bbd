"""Plots bench/scale.csv (written by `cargo bench --bench scale`) as a PNG: each figure
steward reports against the established loopback connections held on the host.
Usage: python3 bench/plot-scale.py [csv] [png] [before-csv]   (needs matplotlib)
With a "before" CSV (default bench/scale-before.csv, when it exists: the figures of the
build before netlink and the I/O worker), each series is drawn over its "before" one,
dashed."""
import os
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

src = sys.argv[1] if len(sys.argv) > 1 else "bench/scale.csv"
dst = sys.argv[2] if len(sys.argv) > 2 else "bench/scale.png"
before_src = sys.argv[3] if len(sys.argv) > 3 else "bench/scale-before.csv"
with open(src) as f:
    rows = list(csv.DictReader(f))
before = []
if os.path.exists(before_src):
    with open(before_src) as f:
        before = list(csv.DictReader(f))


def col(name, table=None):
    """(connections in thousands, value) for the rows where the figure was measured."""
    table = rows if table is None else table
    return [
        (int(r["connections"]) / 1000, float(r[name]))
        for r in table
        if r.get(name, "") != ""
    ]


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
            line = ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=label)
            old = col(name, before)
            if old:
                ax.plot(
                    [x for x, _ in old],
                    [y for _, y in old],
                    linestyle="--",
                    marker=".",
                    color=line[0].get_color(),
                    alpha=0.6,
                    label=f"{label}, before",
                )
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(unit)
    ax.set_xlabel("host connections (thousands; 2 TCP sockets each)")
    if before and unit != "count":
        # The figures before and after differ by orders of magnitude.
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    if unit == "count":
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if len(series) > 1 or before:
        ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(dst, dpi=90)
print(f"wrote {dst}")
