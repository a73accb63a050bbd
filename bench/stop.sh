#!/usr/bin/env bash
# Prints the stop/start benchmark table (median of BENCH_RUNS runs, default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --locked -p steward-e2e --bench stop 2>/dev/null
