#!/usr/bin/env bash
# The fault report: bench/faults.rs tries every fault against the real binaries, then the
# real-systemd suite adds what only systemd can judge (no SIGKILL of its own, Result=).
# Writes bench/fault-report.md and replaces the table between the markers in README.md.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
out=bench/fault-report.md
sd_failed=0
mkdir -p target
{
  echo "Faults tried against the real binaries on $(date -u +%F) ($(nproc) cores), by \`make faults\`:"
  echo
  cargo bench --locked -p steward-e2e --bench faults -- "$@"
  echo
  echo "\"survivors\": processes of the faulty tree still alive afterwards (pid and start time"
  echo "compared, so a recycled pid does not count)."
  if [[ $# -eq 0 ]]; then
    echo
    echo "Under systemd 252, with the shipped unit as its \`steward\` user (\`tests/systemd/run.sh\`; a"
    echo "scenario fails if systemd itself had to SIGKILL anything or its stop timed out):"
    echo
    # The suite's full output (each check, and the journal of a failed scenario) stays in
    # target/; the report takes its summary table.
    bash tests/systemd/run.sh </dev/null >target/fault-report-systemd.log 2>&1 || sd_failed=1
    sed -n '/^| scenario/,/^systemd:/p' target/fault-report-systemd.log
  fi
} >"$out.tmp"
mv "$out.tmp" "$out"
python3 - "$out" <<'PY'
import re, sys
report = open(sys.argv[1]).read().strip()
readme = open("README.md").read()
begin, end = "<!-- fault-report:begin -->", "<!-- fault-report:end -->"
if begin not in readme:
    sys.exit("README.md has no fault-report markers")
head, rest = readme.split(begin, 1)
_, tail = rest.split(end, 1)
open("README.md", "w").write(f"{head}{begin}\n{report}\n{end}{tail}")
PY
cat "$out"
if ((sd_failed)); then
  echo "a systemd scenario failed: see target/fault-report-systemd.log" >&2
  exit 1
fi
