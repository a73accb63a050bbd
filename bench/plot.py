"""Plots bench/reload-latency.csv (written by `cargo bench --bench reload`) as a PNG:
latency of every request over time, one panel per scenario, failures and refusals marked.
Usage: python3 bench/plot.py [csv] [png]   (needs matplotlib)"""
import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

src = sys.argv[1] if len(sys.argv) > 1 else "bench/reload-latency.csv"
dst = sys.argv[2] if len(sys.argv) > 2 else "bench/reload-latency.png"
rows = defaultdict(list)
with open(src) as f:
    for r in csv.DictReader(f):
        rows[r["scenario"]].append((float(r["t_s"]), float(r["latency_ms"]), r["outcome"]))

fig, axes = plt.subplots(len(rows), 1, figsize=(10, 2.6 * len(rows)), sharey=True)
if len(rows) == 1:
    axes = [axes]
for ax, (name, pts) in zip(axes, rows.items()):
    # "cut": in flight when the event began (a kill -9 of the child cuts those).
    for outcome, color, marker in (("ok", "tab:blue", "."), ("cut", "tab:purple", "+"), ("failed", "tab:red", "x"), ("refused", "tab:orange", "v")):
        xs = [t for t, _, o in pts if o == outcome]
        ys = [max(l, 0.01) for _, l, o in pts if o == outcome]
        if xs:
            ax.scatter(xs, ys, s=6 if outcome == "ok" else 24, c=color, marker=marker, label=f"{outcome} ({len(xs)})")
    ax.set_yscale("log")
    ax.set_title(name, fontsize=10)
    ax.set_ylabel("latency ms")
    ax.legend(loc="upper right", fontsize=8)
axes[-1].set_xlabel("seconds since the load started")
fig.tight_layout()
fig.savefig(dst, dpi=90)
print(f"wrote {dst}")
