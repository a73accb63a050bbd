#!/usr/bin/env bash
# The user's problem under a real systemd 252, side by side with Steward: the same Pingora
# YAML (grace_period_seconds: 300), stopped with `systemctl stop`, verdict from systemd.
#
#  - Pingora alone, as Pingora's docs recommend: Type=forking, -d, PIDFile, default
#    TimeoutStopSec (90 s). Expected: ~90 s, then systemd's SIGKILL, Result=timeout.
#  - The shipped steward-proxy.service (TimeoutStopSec=30) supervising the stock Pingora
#    binary with the same YAML. Expected: well under a second, Result=success.
#
# Slow (about 95 s) on purpose, so it is a benchmark, not part of `make test`.
# Usage: bash bench/systemd-stop.sh   (needs root and a `make build`)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
release=$repo/target/release
# shellcheck source=tests/systemd/lib.sh
source "$repo/tests/systemd/lib.sh"
if ! reason=$(sd_can_run); then
  echo "SKIPPED: $reason"
  exit 0
fi

YAML=$'---\nversion: 1\nthreads: 2\npid_file: /run/pingora.pid\nupgrade_sock: /tmp/pingora_upgrade.sock\nerror_log: /var/log/pingora_err.log\ngrace_period_seconds: 300\n'

sd_boot stopbench \
  "$release/steward:/usr/local/bin/steward" \
  "$release/stock-pingora:/usr/local/bin/stock-pingora"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
cursor() { sd_journal -n 1 --show-cursor -o cat | sed -n 's/^-- cursor: //p'; }

sd_write_file /etc/pingora/pingora.yaml "$YAML"
sd_write_file /etc/systemd/system/pingora.service $'[Unit]\nDescription=Pingora alone, as its docs recommend\n[Service]\nType=forking\nPIDFile=/run/pingora.pid\nEnvironment=STOCK_LISTEN=127.0.0.1:6188 STOCK_UPSTREAM=127.0.0.1:6189\nExecStart=/usr/local/bin/stock-pingora -d -c /etc/pingora/pingora.yaml\nExecReload=kill -QUIT $MAINPID\nExecReload=/usr/local/bin/stock-pingora -u -d -c /etc/pingora/pingora.yaml\n'

# The shipped unit runs as User=steward: create it as a package would.
sd_write_file /usr/lib/sysusers.d/steward.conf - <"$repo/etc/systemd/steward.sysusers"
sd_run systemd-sysusers /usr/lib/sysusers.d/steward.conf >/dev/null
sd_install_unit "$repo/etc/systemd/steward-proxy.service" 50-stock-pingora \
  $'[Service]\nExecStart=\nExecStart=/usr/local/bin/steward run --config /etc/steward/stock.toml\n'
sd_write_file /etc/steward/stock.toml $'[child]\ncommand = ["/usr/local/bin/stock-pingora"]\npingora_conf = "/etc/pingora/pingora.yaml"\nenv = { STOCK_LISTEN = "127.0.0.1:6188", STOCK_UPSTREAM = "127.0.0.1:6189" }\n[ready]\ntcp = "127.0.0.1:6188"\n'
# Keep both units loaded after they stop, so their Result stays readable.
sd_dropin harness.target 50-keep $'[Unit]\nWants=pingora.service steward-proxy.service\n'

rows=()
measure() {
  local unit=$1 label=$2 c t secs
  sd_systemctl start "$unit"
  c=$(cursor)
  t=$(now)
  sd_systemctl stop "$unit"
  secs=$(since "$t")
  local kills
  kills=$(sd_journal --after-cursor="$c" -o cat | grep -Ec "timed out|with signal SIGKILL" || true)
  rows+=("| $label | ${secs} s | $(sd_show "$unit" Result) | $(sd_show "$unit" TimeoutStopUSec) | $kills |")
  echo "-- $label: journal"
  sd_journal --after-cursor="$c" -o short-monotonic | grep -v "^-- " | sed 's/^/   /' | tail -8
}

measure steward-proxy.service "steward + stock Pingora (shipped unit)"
measure pingora.service "Pingora alone (Type=forking, -d, PIDFile)"

echo
echo "| unit | systemctl stop took | Result | TimeoutStopSec | systemd timeout/SIGKILL lines |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
