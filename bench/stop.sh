#!/usr/bin/env bash
# Prints the stop/start benchmark table (median of BENCH_RUNS runs, default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --locked -p steward-e2e --bench stop 2>/dev/null
cargo bench --locked -p steward-e2e --bench reload 2>/dev/null
if python3 -c "import matplotlib" 2>/dev/null; then python3 bench/plot.py; else echo "(pip install matplotlib to plot bench/reload-latency.csv)"; fi
