#!/usr/bin/env bash
# Prints the stop/start benchmark table (median of BENCH_RUNS runs, default 10), the
# reload latency and the scale tables.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --locked -p steward-e2e --bench stop 2>/dev/null
cargo bench --locked -p steward-e2e --bench reload 2>/dev/null
# Start, crash recovery and reload by child.handoff (issue 15).
cargo bench --locked -p steward-e2e --bench handoff 2>/dev/null
# steward as PID 1 under podman, reloaded by `podman kill -s HUP` (needs root, podman, runc).
cargo bench --locked -p steward-e2e --bench podman 2>/dev/null
# steward-pingora's drain watcher with 1k to 19k clients left (about 40 s).
cargo bench --locked -p steward-pingora --bench drain-scan 2>/dev/null
if python3 -c "import matplotlib" 2>/dev/null; then python3 bench/plot.py; else echo "(pip install matplotlib to plot bench/reload-latency.csv)"; fi
# steward with 0 to 100k connections held on the host (about 5 minutes; SCALE_LEVELS=0,20000
# for fewer levels). Writes bench/scale.csv.
cargo bench --locked -p steward-e2e --bench scale 2>/dev/null
if python3 -c "import matplotlib" 2>/dev/null; then python3 bench/plot-scale.py; else echo "(pip install matplotlib to plot bench/scale.csv)"; fi
