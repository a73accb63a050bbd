#!/usr/bin/env bash
# The shipped unit under a real systemd 252: started, stopped, restarted and killed by
# systemd itself, with the verdict read from systemd (Result, ExecMainCode, ExecMainStatus,
# MainPID, StatusText, the journal), never from the exit code of `systemctl stop`.
#
# One container boot serves every scenario. Needs root and systemd-nspawn; elsewhere each
# scenario is reported SKIPPED with the reason (under CI=true that is a failure, since CI
# runs as root and the suite must run there).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
release=$repo/target/release
# shellcheck source=tests/systemd/lib.sh
source "$repo/tests/systemd/lib.sh"
# shellcheck source=tests/systemd/scenario-check.sh
source "$repo/tests/systemd/scenario-check.sh"

UNIT=steward-proxy.service
PROXY=127.0.0.1:6188
SCENARIOS=(
  "1 start returns after READY, request succeeds"
  "2 idle stop with grace_period_seconds 300"
  "3 stop with a 3 s request in flight"
  "4 child ignoring SIGTERM, TimeoutStopSec=6"
  "5 deadline follows the live unit"
  "6 structured journal fields"
  "7 restart and SIGKILL of steward"
  "8 bad configuration: 78, no restart loop"
  "9 systemctl reload keeps MainPID, fails visibly"
  "10 watchdog: healthy never fires, hung steward does"
  "11 listeners from a socket unit (LISTEN_FDS)"
  "12 steward check on the live unit, and at start-up"
  "13 child crash: steward restarts it, MainPID kept"
  "14 setsid, double fork, fork bomb of 511"
  "15 crash loop: steward gives up, Restart= paces"
  "16 reload retires a generation's escapees"
  "17 watchdog pings stop for a hung child, resume"
  "18 open files: 5,000 concurrent slow requests"
  "19 SIGKILL of steward: fd store, 0 refused"
  "20 steward upgraded in place: MainPID kept"
)

if ! reason=$(sd_can_run); then
  for s in "${SCENARIOS[@]}"; do
    echo "SKIPPED: systemd scenario $s: $reason"
  done
  if [[ ${CI:-} == true ]]; then
    echo "FAILED: the real-systemd suite must run on CI (root) but cannot: $reason"
    exit 1
  fi
  exit 0
fi
for b in steward steward-proxy stubborn-child stock-pingora; do
  [[ -x $release/$b ]] || { echo "FAILED: $release/$b is missing: run 'make build' first"; exit 1; }
done

failures=0
summary=()
# shellcheck source=tests/systemd/expect.sh
source "$repo/tests/systemd/expect.sh"
# shellcheck source=tests/systemd/load.sh
source "$repo/tests/systemd/load.sh"
# expect_lt WHAT SECONDS LIMIT
expect_lt() {
  if awk -v a="$2" -v b="$3" 'BEGIN { exit !(a < b) }'; then ok "$1 = ${2}s < ${3}s"; else fail "$1 = ${2}s, not < ${3}s"; fi
}
expect_between() {
  if awk -v a="$2" -v lo="$3" -v hi="$4" 'BEGIN { exit !(a >= lo && a < hi) }'; then
    ok "$1 = ${2}s in [$3, $4)"
  else
    fail "$1 = ${2}s, not in [$3, $4)"
  fi
}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }

# The journal cursor now, so a scenario reads only its own records.
cursor() { sd_journal -n 1 --show-cursor -o cat | sed -n 's/^-- cursor: //p'; }
journal_since() { sd_journal --after-cursor="$1" "${@:2}"; }

# systemd's own signs that it had to kill: none of these may appear in a scenario.
expect_no_systemd_kill() {
  local log
  log=$(journal_since "$1" -o short)
  if grep -Eq "stop-sigterm' timed out|Killing process [0-9]+ .* with signal SIGKILL|Failed with result 'timeout'" <<<"$log"; then
    fail "systemd had to kill: $(grep -E "timed out|SIGKILL|timeout" <<<"$log" | head -3)"
  else
    ok "journal: systemd sent no SIGKILL and no stop timeout"
  fi
}

show() { sd_show "$UNIT" "$1"; }

begin() {
  current=$1
  scenario_failed=0
  scenario_t0=$(now)
  echo "== scenario $current"
}
end() {
  local result=${1:-$(show Result)}
  local secs
  secs=$(since "$scenario_t0")
  if ((scenario_failed)); then
    failures=$((failures + 1))
    summary+=("$(printf '| %-45s | %6s | %-10s | FAIL |' "$current" "$secs" "$result")")
    echo "  -- journal of $UNIT (last 40 lines):"
    sd_journal -u "$UNIT" -n 40 -o short-monotonic | sed 's/^/     /'
  else
    summary+=("$(printf '| %-45s | %6s | %-10s | pass |' "$current" "$secs" "$result")")
  fi
}

# Back to the shipped state: unit as shipped, shipped /etc/steward, stopped, no failure.
reset_unit() {
  sd_systemctl stop "$UNIT" >/dev/null 2>&1 || true
  sd_run rm -rf "/etc/systemd/system/$UNIT.d"
  sd_systemctl daemon-reload
  sd_systemctl reset-failed "$UNIT" >/dev/null 2>&1 || true
  for f in steward.toml pingora.yaml proxy.toml; do
    sd_write_file "/etc/steward/$f" - <"$repo/etc/steward/$f"
  done
}

wait_active() {
  local i
  for i in $(seq 1 100); do
    [[ $(show ActiveState) == active ]] && return 0
    sleep 0.05
  done
  return 1
}

http_code() { sd_run curl -s -o /dev/null -m 10 -w '%{http_code}' "http://$PROXY$1" || true; }


# ---------------------------------------------------------------------------------------
# --system-call-filter: systemd-nspawn's own seccomp allow-list lacks pidfd_getfd (as
# systemd's @system-service does), so inside the container steward's drain would always
# fall back to listing the host's connections, whatever the unit allows. A real host has
# no such outer filter; the unit's own SystemCallFilter= is what scenario 3 checks.
sd_boot steward --system-call-filter=pidfd_getfd \
  "$release/steward:/usr/local/bin/steward" \
  "$release/steward-proxy:/usr/local/bin/steward-proxy" \
  "$release/stubborn-child:/opt/steward-test/bin/stubborn-child" \
  "$release/stock-pingora:/opt/steward-test/bin/stock-pingora"
echo "container booted in ${SD_BOOT_SECONDS}s (systemd $(sd_run systemctl --version | head -1 | awk '{print $2}'))"

# The service user, as a package installs it: the shipped sysusers.d entry, then
# systemd-sysusers (the unit runs as User=steward).
sd_write_file /usr/lib/sysusers.d/steward.conf - <"$repo/etc/systemd/steward.sysusers"
sd_run systemd-sysusers /usr/lib/sysusers.d/steward.conf >/dev/null
steward_uid=$(sd_run id -u steward) || { echo "FAILED: systemd-sysusers did not create the steward user"; exit 1; }
sd_install_unit "$repo/etc/systemd/steward-proxy.service"
# The man page the unit's Documentation= names, where `make install` puts it
# (systemd-analyze verify checks that man finds it).
sd_write_file /usr/local/share/man/man1/steward.1 - <"$repo/docs/steward.1"
# What `systemctl enable` does, for the harness's target: an inactive unit nobody wants is
# unloaded at once, and with it the ExecMain*/Result properties the scenarios assert.
sd_dropin harness.target 50-keep-loaded "[Unit]"$'\n'"Wants=$UNIT"$'\n'
reset_unit
if out=$(sd_run systemd-analyze verify "/etc/systemd/system/$UNIT" 2>&1); then
  echo "  ok   systemd-analyze verify accepts the shipped unit"
else
  echo "  FAIL systemd-analyze verify: $out"
  failures=$((failures + 1))
fi

# 1 ------------------------------------------------------------------------------------
begin "${SCENARIOS[0]}"
c=$(cursor)
sd_systemctl start "$UNIT" || fail "systemctl start failed"
expect_eq "request right after start returns" "$(http_code /)" 200
expect_eq ActiveState "$(show ActiveState)" active
main=$(show MainPID)
expect_eq "MainPID's program" "$(sd_run cat "/proc/$main/comm")" steward
expect_match StatusText "$(show StatusText)" '^serving: generation [0-9]+, child pid [0-9]+$'
expect_match "systemctl status" "$(sd_systemctl status "$UNIT" || true)" 'Status: "serving: generation 1, child pid'
log=$(journal_since "$c" -u "$UNIT" -o cat)
expect_match "journal" "$log" 'passed [0-9]+ ms after spawn\); READY=1'
# The hardened unit: steward and its child run as the service user with one capability,
# no new privileges and a seccomp filter...
child=$(show StatusText | sed -n 's/^serving: generation [0-9]*, child pid \([0-9]*\).*$/\1/p')
for who in "steward:$main" "child:$child"; do
  st=$(sd_run grep -E '^(Uid|CapEff|NoNewPrivs|Seccomp):' "/proc/${who#*:}/status" | tr -s '\t\n' '  ')
  expect_match "${who%%:*}'s credentials" "$st" "^Uid: $steward_uid $steward_uid $steward_uid $steward_uid CapEff: 0000000000000400 NoNewPrivs: 1 Seccomp: 2 \$"
done
# ...and still has what it relies on: netlink sock_diag (not the /proc/net/tcp fallback)
# and its delegated cgroup (not the process-group fallback).
expect_match "journal: socket facts" "$log" 'socket facts from netlink sock_diag'
expect_match "journal: cgroup kills" "$log" 'kills: each generation in its own cgroup under [^ ]+steward-proxy.service \(Delegate=yes\)'
expect_eq "steward's cgroup" "$(sd_run sed -n 's/^0:://p' "/proc/$main/cgroup")" /system.slice/steward-proxy.service/supervisor
expect_match "child's cgroup" "$(sd_run sed -n 's/^0:://p' "/proc/$child/cgroup")" '^/system.slice/steward-proxy.service/gen-1$'
end

# 2 ------------------------------------------------------------------------------------
begin "${SCENARIOS[1]}"
reset_unit
sd_write_file /etc/steward/pingora.yaml $'---\nversion: 1\nthreads: 2\npid_file: /run/pingora.pid\nupgrade_sock: /tmp/pingora_upgrade.sock\nerror_log: /var/log/pingora_err.log\ngrace_period_seconds: 300\n'
sd_systemctl start "$UNIT" || fail "systemctl start failed"
c=$(cursor)
expect_eq "request" "$(http_code /)" 200
t=$(now)
sd_systemctl stop "$UNIT" || fail "systemctl stop failed"
expect_lt "systemctl stop (idle)" "$(since "$t")" 1
expect_eq Result "$(show Result)" success
expect_eq ExecMainCode "$(show ExecMainCode)" 1
expect_eq ExecMainStatus "$(show ExecMainStatus)" 0
expect_no_systemd_kill "$c"
expect_match "deadline record" "$(sd_journal -u "$UNIT" -o cat)" 'stop deadline 25 s = TimeoutStopSec 30 s - margin 5 s \(systemd\)'
expect_match "clamp warning" "$(sd_journal -u "$UNIT" -o cat)" 'grace_period_seconds 300 .* clamped to grace_period_seconds 25'
end

# 3 ------------------------------------------------------------------------------------
begin "${SCENARIOS[2]}"
reset_unit
# steward's debug records name each fallback of the drain count: pidfd_getfd refused
# (a seccomp filter without it), a sock_diag lookup or dump refused.
sd_dropin "$UNIT" 50-debug $'[Service]\nEnvironment=STEWARD_LOG=info,steward=debug\n'
c_start=$(cursor)
sd_systemctl start "$UNIT" || fail "systemctl start failed"
c=$(cursor)
slow=$(mktemp)
sd_run curl -s -o /dev/null -m 20 -w '%{http_code}' "http://$PROXY/delay/3000" >"$slow" 2>&1 &
curl_pid=$!
sleep 0.3
t=$(now)
sd_systemctl stop "$UNIT" || fail "systemctl stop failed"
stop_secs=$(since "$t")
wait "$curl_pid" || true
expect_eq "slow request" "$(cat "$slow")" 200
rm -f "$slow"
expect_between "systemctl stop with 3 s request (0.3 s in)" "$stop_secs" 2.5 3.7
expect_eq Result "$(show Result)" success
expect_no_systemd_kill "$c"
# The count must be the request held: a status that never counted it says "0 requests".
expect_match "draining status" "$(journal_since "$c" -u "$UNIT" -o cat)" 'draining: [1-9][0-9]* requests? in flight'
# Counted from the child's own sockets (pidfd_open + pidfd_getfd) and netlink, with no
# fallback. tracing-journald logs DEBUG at priority 6 (info); the start's first readiness
# probe, refused, is one such record. (Here journalctl 252 printed nothing for
# --after-cursor with a _COMM= match, so the records are filtered in Python.)
debug=$(journal_since "$c_start" -u "$UNIT" -p info..info -o json | python3 -c '
import json, sys
for l in sys.stdin:
    r = json.loads(l) if l.strip() else {}
    if r.get("_COMM") == "steward":
        print(r.get("MESSAGE"))')
if [[ -z $debug ]]; then
  fail "no debug record from steward: STEWARD_LOG did not take"
elif fallbacks=$(grep -E '^(pidfd_getfd|sock_diag (lookup|dump)): ' <<<"$debug"); then
  fail "the drain count fell back: $(sort <<<"$fallbacks" | uniq -c | head -3)"
else
  ok "journal (debug): no pidfd_getfd or sock_diag fallback during the drain"
fi
end

# 4 ------------------------------------------------------------------------------------
begin "${SCENARIOS[3]}"
reset_unit
sd_write_file /etc/steward/stubborn.toml $'[child]\ncommand = ["/opt/steward-test/bin/stubborn-child"]\nenv = { STUBBORN_LISTEN = "127.0.0.1:6388", STUBBORN_PIDFILE = "/run/steward/stubborn.pids" }\n[ready]\ntcp = "127.0.0.1:6388"\n[stop]\ndrain = "exit"\n'
sd_dropin "$UNIT" 50-stubborn $'[Service]\nTimeoutStopSec=6\nExecStart=\nExecStart=/usr/local/bin/steward run --config /etc/steward/stubborn.toml\n'
stubborn_cursor=$(cursor)
sd_systemctl start "$UNIT" || fail "systemctl start failed"
pids=$(sd_run cat /run/steward/stubborn.pids | tr '\n' ' ')
expect_match "stubborn child and its three escapees" "$pids" '^[0-9]+ [0-9]+ [0-9]+ [0-9]+ $'
t=$(now)
sd_systemctl stop "$UNIT" || fail "systemctl stop failed"
expect_lt "systemctl stop (child ignores SIGTERM, TimeoutStopSec=6)" "$(since "$t")" 6
expect_eq Result "$(show Result)" success
expect_eq ExecMainStatus "$(show ExecMainStatus)" 0
expect_no_systemd_kill "$stubborn_cursor"
for p in $pids; do
  if sd_run test -d "/proc/$p"; then fail "pid $p survived the stop"; else ok "pid $p is gone"; fi
done
log=$(journal_since "$stubborn_cursor" -u "$UNIT" -o cat)
expect_match "escalation record" "$log" 'stop deadline reached after [0-9]+ ms: SIGKILL to child pid [0-9]+.*stop deadline 1 s = TimeoutStopSec 6 s - margin 5 s \(systemd\)'
end

# 6 (reads scenario 4's journal: start, stop and escalation records) -------------------
begin "${SCENARIOS[5]}"
json=$(journal_since "$stubborn_cursor" -u "$UNIT" -o json)
if verdict=$(python3 - "$json" <<'EOF'
import json, sys
recs = [json.loads(l) for l in sys.argv[1].splitlines() if l.strip()]
def has(pred, what):
    if not any(pred(r) for r in recs):
        print(f"no record with {what}")
        return False
    return True
ok = all([
    has(lambda r: r.get("STEWARD_PHASE") == "starting" and r.get("STEWARD_CHILD_PID"), "STEWARD_PHASE=starting and STEWARD_CHILD_PID"),
    has(lambda r: r.get("STEWARD_PHASE") == "serving" and r.get("STEWARD_CHILD_PID"), "STEWARD_PHASE=serving and STEWARD_CHILD_PID"),
    has(lambda r: r.get("STEWARD_DEADLINE_MS") == "1000" and r.get("STEWARD_DEADLINE_SOURCE") == "systemd", "the deadline record (STEWARD_DEADLINE_MS=1000, source systemd)"),
    has(lambda r: r.get("STEWARD_PHASE") == "stopping" and r.get("STEWARD_SIGNAL") == "SIGTERM" and r.get("STEWARD_DEADLINE_MS") == "1000" and r.get("STEWARD_CHILD_PID"), "the stop record (phase, signal, deadline, child pid)"),
    has(lambda r: r.get("STEWARD_ESCALATION") == "deadline" and r.get("STEWARD_PHASE") == "killing" and r.get("STEWARD_DEADLINE_MS") == "1000" and r.get("STEWARD_CHILD_PID") and r.get("STEWARD_ELAPSED_MS"), "the escalation record (phase, deadline, child pid, elapsed)"),
    has(lambda r: r.get("STEWARD_PHASE") == "exited" and r.get("STEWARD_EXIT_CODE") == "0", "the exit record"),
])
print("all structured records present" if ok else "")
sys.exit(0 if ok else 1)
EOF
); then ok "$verdict"; else fail "$verdict"; fi
end "n/a"

# 5 ------------------------------------------------------------------------------------
begin "${SCENARIOS[4]}"
reset_unit
for t in 20 45; do
  sd_dropin "$UNIT" 50-timeout "[Service]"$'\n'"TimeoutStopSec=$t"$'\n'
  c=$(cursor)
  sd_systemctl restart "$UNIT" || fail "systemctl restart failed"
  expect_match "deadline after TimeoutStopSec=$t" "$(journal_since "$c" -u "$UNIT" -o cat)" "stop deadline $((t - 5)) s = TimeoutStopSec $t s - margin 5 s \\(systemd\\)"
done
sd_systemctl stop "$UNIT" || fail "systemctl stop failed"
end

# 7 ------------------------------------------------------------------------------------
begin "${SCENARIOS[6]}"
reset_unit
sd_systemctl start "$UNIT" || fail "systemctl start failed"
old_main=$(show MainPID)
old_child=$(show StatusText | sed -n 's/^serving: generation [0-9]*, child pid \([0-9]*\).*$/\1/p')
c=$(cursor)
sd_systemctl restart "$UNIT" || fail "systemctl restart failed"
new_main=$(show MainPID)
[[ $new_main != "$old_main" ]] && ok "restart: new MainPID $new_main" || fail "restart kept MainPID $old_main"
if sd_run test -d "/proc/$old_child"; then fail "old child $old_child survived the restart"; else ok "old child $old_child is gone"; fi
expect_eq "request after restart" "$(http_code /)" 200
expect_no_systemd_kill "$c"
child=$(show StatusText | sed -n 's/^serving: generation [0-9]*, child pid \([0-9]*\).*$/\1/p')
sd_systemctl kill --kill-whom=main --signal=SIGKILL "$UNIT"
sleep 0.3
if sd_run test -d "/proc/$child"; then fail "child $child survived steward's SIGKILL"; else ok "child $child died with steward"; fi
wait_active || fail "not restarted by Restart=on-failure"
sleep 0.2
[[ $(show MainPID) != "$new_main" ]] && ok "restarted with MainPID $(show MainPID)" || fail "MainPID unchanged"
expect_match NRestarts "$(show NRestarts)" '^[1-9]'
expect_eq "request after the crash restart" "$(http_code /)" 200
sd_systemctl stop "$UNIT" || fail "systemctl stop failed"
end

# 8 ------------------------------------------------------------------------------------
begin "${SCENARIOS[7]}"
reset_unit
sd_write_file /etc/steward/bad.toml $'[child]\ncommand = ["steward-proxy", "--proxy-config", "proxy.toml"]\npingora_conf = "pingora.yaml"\n[ready]\nhttp = "http://127.0.0.1:6190/health"\n[stop]\ndeadlin = "5s"\n'
sd_dropin "$UNIT" 50-bad $'[Service]\nExecStart=\nExecStart=/usr/local/bin/steward run --config /etc/steward/bad.toml\n'
c=$(cursor)
if sd_systemctl start "$UNIT" 2>/dev/null; then fail "start succeeded with a bad configuration"; else ok "systemctl start failed"; fi
expect_eq ExecMainStatus "$(show ExecMainStatus)" 78
expect_eq Result "$(show Result)" exit-code
expect_match "journal reason" "$(journal_since "$c" -u "$UNIT" -o cat)" 'configuration error: /etc/steward/bad.toml:7: unknown field `deadlin`'
sleep 2.5
expect_eq "ActiveState 2.5 s later" "$(show ActiveState)" failed
expect_eq NRestarts "$(show NRestarts)" 0
# The shipped configuration with a unit whose stop timeout leaves no room for the margin.
reset_unit
sd_dropin "$UNIT" 50-short $'[Service]\nTimeoutStopSec=4\n'
c=$(cursor)
if sd_systemctl start "$UNIT" 2>/dev/null; then fail "start succeeded with margin > TimeoutStopSec"; else ok "systemctl start failed (margin 5 s, TimeoutStopSec=4)"; fi
expect_eq "ExecMainStatus (margin)" "$(show ExecMainStatus)" 78
expect_match "journal reason (margin)" "$(journal_since "$c" -u "$UNIT" -o cat)" 'stop.margin 5 s is not smaller than the unit.s TimeoutStopSec 4 s'
end

# 9 ------------------------------------------------------------------------------------
begin "${SCENARIOS[8]}"
reset_unit
sd_systemctl start "$UNIT" || fail "systemctl start failed"
main=$(show MainPID)
c=$(cursor)
t=$(now)
if sd_systemctl reload "$UNIT"; then ok "systemctl reload succeeded"; else fail "systemctl reload failed"; fi
expect_lt "systemctl reload" "$(since "$t")" 3
expect_eq "MainPID after reload" "$(show MainPID)" "$main"
expect_match "StatusText after reload" "$(show StatusText)" '^serving: generation 2, child pid [0-9]+ \(reloaded\)$'
expect_eq "request after reload" "$(http_code /)" 200
sd_write_file /etc/steward/pingora.yaml $'version: 1\ngrace_period_seconds: [oops\n'
if sd_systemctl reload "$UNIT" 2>/dev/null; then fail "reload of a broken configuration succeeded"; else ok "systemctl reload failed for a broken configuration"; fi
expect_eq "ActiveState after the failed reload" "$(show ActiveState)" active
expect_eq "MainPID after the failed reload" "$(show MainPID)" "$main"
expect_match "StatusText after the failed reload" "$(show StatusText)" '^serving: generation 2, .*reload failed: .*invalid YAML'
expect_eq "request after the failed reload" "$(http_code /)" 200
expect_match "journal" "$(journal_since "$c" -u "$UNIT" -o cat)" 'reload failed: configuration check failed: configuration error: /etc/steward/pingora.yaml:[0-9]+: invalid YAML'
end

# 10 -----------------------------------------------------------------------------------
begin "${SCENARIOS[9]}"
reset_unit
sd_dropin "$UNIT" 50-watchdog $'[Service]\nWatchdogSec=2\nTimeoutAbortSec=2\n'
sd_systemctl start "$UNIT" || fail "systemctl start failed"
c=$(cursor)
sleep 5
expect_eq "ActiveState after 5 s with WatchdogSec=2" "$(show ActiveState)" active
expect_eq "NRestarts with a healthy child" "$(show NRestarts)" 0
main=$(show MainPID)
sd_systemctl kill --kill-whom=main --signal=SIGSTOP "$UNIT"
result=""
for _ in $(seq 1 80); do
  result=$(show Result)
  [[ $result == watchdog ]] && break
  sleep 0.1
done
expect_eq "Result after steward hung (SIGSTOP)" "$result" watchdog
expect_match "journal" "$(journal_since "$c" -u "$UNIT" -o cat)" 'Watchdog timeout'
sd_systemctl stop "$UNIT" >/dev/null 2>&1 || true
end "watchdog"

# 11 -----------------------------------------------------------------------------------
begin "${SCENARIOS[10]}"
reset_unit
sd_write_file /etc/systemd/system/steward-proxy.socket $'[Socket]\nListenStream=127.0.0.1:6188\nListenStream=127.0.0.1:6189\nService=steward-proxy.service\n'
sd_systemctl daemon-reload
c=$(cursor)
sd_systemctl start steward-proxy.socket || fail "socket unit did not start"
sd_systemctl start "$UNIT" || fail "systemctl start failed"
log=$(journal_since "$c" -u "$UNIT" -o cat)
expect_match "journal" "$log" 'listener 127.0.0.1:6188 taken from systemd socket activation'
expect_match "journal" "$log" 'listener 127.0.0.1:6189 taken from systemd socket activation'
expect_eq "request through activated sockets" "$(http_code /)" 200
if sd_systemctl reload "$UNIT"; then ok "reload with activated sockets"; else fail "reload failed"; fi
expect_eq "request after reload" "$(http_code /)" 200
sd_systemctl stop "$UNIT" || fail "systemctl stop failed"
expect_eq Result "$(show Result)" success
sd_systemctl stop steward-proxy.socket || true
sd_run rm -f /etc/systemd/system/steward-proxy.socket
sd_systemctl daemon-reload
end

# 12 -----------------------------------------------------------------------------------
scenario_check

# 13 -----------------------------------------------------------------------------------
begin "${SCENARIOS[12]}"
reset_unit
sd_systemctl start "$UNIT" || fail "systemctl start failed"
main=$(show MainPID)
child=$(show StatusText | sed -n 's/^serving: generation [0-9]*, child pid \([0-9]*\).*$/\1/p')
c=$(cursor)
sd_run kill -9 "$child"
status=""
for _ in $(seq 1 60); do
  status=$(show StatusText)
  [[ $status =~ ^serving:\ generation\ 2 ]] && break
  sleep 0.1
done
expect_match "StatusText after the crash" "$status" '^serving: generation 2, child pid [0-9]+, 1 restart$'
expect_eq "MainPID after the crash" "$(show MainPID)" "$main"
expect_eq "NRestarts (systemd did not restart the unit)" "$(show NRestarts)" 0
expect_eq "request after the crash" "$(http_code /)" 200
expect_match "journal" "$(journal_since "$c" -u "$UNIT" -o cat)" 'ended on its own \(signal 9 \(SIGKILL\)\); restarting in 100 ms'
sd_systemctl stop "$UNIT" || fail "systemctl stop failed"
expect_eq Result "$(show Result)" success
end

# 14 -----------------------------------------------------------------------------------
begin "${SCENARIOS[13]}"
reset_unit
sd_write_file /etc/steward/stubborn.toml $'[child]\ncommand = ["/opt/steward-test/bin/stubborn-child"]\nenv = { STUBBORN_LISTEN = "127.0.0.1:6388", STUBBORN_PIDFILE = "/run/steward/stubborn.pids", STUBBORN_FORKBOMB_DEPTH = "8" }\n[ready]\ntcp = "127.0.0.1:6388"\n[stop]\ndrain = "exit"\n'
sd_dropin "$UNIT" 50-stubborn $'[Service]\nTimeoutStopSec=6\nExecStart=\nExecStart=/usr/local/bin/steward run --config /etc/steward/stubborn.toml\n'
c=$(cursor)
sd_systemctl start "$UNIT" || fail "systemctl start failed"
# Depth 8: 511 bomb processes besides the child and its three escapees. (nspawn's hybrid
# cgroups give its systemd no pids controller, so TasksMax= would not be enforced here.)
n=0
for _ in $(seq 1 100); do
  n=$(sd_run sh -c 'wc -l < /run/steward/stubborn.pids' 2>/dev/null || echo 0)
  ((n >= 515)) && break
  sleep 0.1
done
expect_eq "processes recorded before the stop" "$n" 515
pids=$(sd_run cat /run/steward/stubborn.pids | tr '\n' ' ')
cgroup=$(show ControlGroup)
t=$(now)
sd_systemctl stop "$UNIT" || fail "systemctl stop failed"
expect_lt "systemctl stop (fork bomb ignoring SIGTERM, TimeoutStopSec=6)" "$(since "$t")" 6
expect_eq Result "$(show Result)" success
expect_eq ExecMainStatus "$(show ExecMainStatus)" 0
expect_no_systemd_kill "$c"
survivors=0
for p in $pids; do sd_run test -d "/proc/$p" && survivors=$((survivors + 1)); done
expect_eq "recorded processes alive after the stop ($(wc -w <<<"$pids") recorded)" "$survivors" 0
if sd_run test -e "/sys/fs/cgroup/unified$cgroup/cgroup.procs" || sd_run test -e "/sys/fs/cgroup$cgroup/cgroup.procs"; then
  fail "the unit's cgroup $cgroup is still there"
else
  ok "the unit's cgroup $cgroup is gone"
fi
log=$(journal_since "$c" -u "$UNIT" -o cat)
expect_match "cgroup mode" "$log" 'kills: each generation in its own cgroup under [^ ]+steward-proxy.service \(Delegate=yes\)'
expect_match "escalation by cgroup.kill" "$log" 'stop deadline reached after [0-9]+ ms: SIGKILL to child pid [0-9]+.s process tree \([0-9]{3} processes\)'
end

# 15 -----------------------------------------------------------------------------------
begin "${SCENARIOS[14]}"
reset_unit
sd_write_file /etc/steward/crash.sh $'#!/bin/sh\n# Serves a moment, then crashes.\n/usr/local/bin/steward-proxy --proxy-config /etc/steward/proxy.toml "$@" & pid=$!\nsleep 0.5\nkill -9 $pid\nexit 3\n'
sd_run chmod 755 /etc/steward/crash.sh
sd_write_file /etc/steward/crash.toml $'[child]\ncommand = ["/etc/steward/crash.sh"]\npingora_conf = "/etc/steward/pingora.yaml"\n[ready]\nhttp = "http://127.0.0.1:6190/health"\n[restart]\nmax_crashes = 2\nbackoff_min = "100ms"\n'
sd_dropin "$UNIT" 50-crash $'[Service]\nExecStart=\nExecStart=/usr/local/bin/steward run --config /etc/steward/crash.toml\n'
c=$(cursor)
sd_systemctl start "$UNIT" || true
restarts=0
for _ in $(seq 1 200); do
  restarts=$(show NRestarts)
  ((restarts >= 2)) && break
  sleep 0.1
done
expect_match "NRestarts: systemd took over" "$restarts" '^[2-9]$'
sd_systemctl stop "$UNIT" >/dev/null 2>&1 || true
if verdict=$(journal_since "$c" -u "$UNIT" -o json | python3 -c "$(cat <<'EOF'
import json, sys
recs = [json.loads(l) for l in sys.stdin if l.strip()]
exits = [int(r["__MONOTONIC_TIMESTAMP"]) for r in recs if r.get("STEWARD_PHASE") == "exited" and r.get("STEWARD_EXIT_CODE") == "3"]
gave_up = [r for r in recs if "giving up" in str(r.get("MESSAGE", ""))]
scheduled = [r for r in recs if "Scheduled restart job" in str(r.get("MESSAGE", ""))]
gaps = [(b - a) / 1e6 for a, b in zip(exits, exits[1:])]
problems = []
if len(exits) < 2: problems.append(f"{len(exits)} steward exits with code 3, expected 2 or more")
if len(gave_up) < 2: problems.append(f"{len(gave_up)} 'giving up' records")
if len(scheduled) < 2: problems.append(f"{len(scheduled)} systemd 'Scheduled restart job' records")
if gaps and min(gaps) < 1.0: problems.append(f"steward ran again {min(gaps):.2f} s after giving up: a tight loop")
if problems:
    print("; ".join(problems)); sys.exit(1)
print(f"steward gave up {len(exits)} times with 3, systemd restarted it each time; gaps {', '.join(f'{g:.1f}' for g in gaps)} s (RestartSec=1 plus steward's own backoff)")
EOF
)"); then ok "$verdict"; else fail "$verdict"; fi
end "n/a"

# 16 -----------------------------------------------------------------------------------
# A reload under the shipped unit (Delegate=yes): generation 1 leaves a setsid grandchild
# and a double-forked daemon, both deaf to SIGTERM and outside its process group. Only
# the generation's cgroup holds them, so only its kill at retirement ends them; steward's
# exit would too, so they must be gone while steward still runs.
# The escapees record their pids in the runtime directory: under the shipped unit's
# User=steward and ProtectSystem=strict, /run itself is read-only to the child.
begin "${SCENARIOS[15]}"
reset_unit
sd_write_file /etc/steward/escapees.sh $'#!/bin/sh\n# Leaves two escapees (not for the configuration check), then runs the server.\ncase " $* " in *" -t "*) exec "$@" ;; esac\nexport STUBBORN_PIDFILE=/run/steward/escapees.pids\n/opt/steward-test/bin/stubborn-child daemonize\n/opt/steward-test/bin/stubborn-child grandchild-setsid &\necho $! >>"$STUBBORN_PIDFILE"\nexec "$@"\n'
sd_run chmod 755 /etc/steward/escapees.sh
sd_run rm -f /run/steward/escapees.pids
sd_run sed -i 's|^command = \["steward-proxy"|command = ["/etc/steward/escapees.sh", "steward-proxy"|' /etc/steward/steward.toml
sd_systemctl start "$UNIT" || fail "systemctl start failed"
main=$(show MainPID)
old=$(sd_run cat /run/steward/escapees.pids | tr '\n' ' ')
expect_match "generation 1's escapees" "$old" '^[0-9]+ [0-9]+ $'
alive=0
for p in $old; do sd_run test -d "/proc/$p" && alive=$((alive + 1)); done
expect_eq "generation 1's escapees running before the reload" "$alive" 2
c=$(cursor)
if sd_systemctl reload "$UNIT"; then ok "systemctl reload succeeded"; else fail "systemctl reload failed"; fi
expect_match "StatusText after reload" "$(show StatusText)" '^serving: generation 2, child pid [0-9]+ \(reloaded\)$'
# Retired: once generation 1 is drained (no request is in flight) its cgroup is killed
# whole, one of two ways: its child exits by itself and steward kills what the cgroup
# still holds ("left 2 processes"), or steward sees it drained first and ends the
# generation, child and escapees together (STEWARD_KILLED counts the processes it
# found: the 2 escapees, and the child unless it exited in the same instant).
retired=""
for _ in $(seq 1 100); do
  retired=$(journal_since "$c" -u "$UNIT" -o cat | grep -E "generation 1's child exited and left [0-9]+ processes in its cgroup; killed them" || true)
  if [[ -z $retired ]]; then
    killed=$(journal_since "$c" -u "$UNIT" -o export | awk -v RS= '/\nSTEWARD_ESCALATION=drained\n/ && /\nSTEWARD_GENERATION=1\n/ { if (match($0, /\nSTEWARD_KILLED=[0-9]+/)) { print substr($0, RSTART + 16, RLENGTH - 16); exit } }')
    [[ -n $killed ]] && retired="generation 1 drained, its cgroup killed: $killed processes"
  fi
  [[ -n $retired ]] && break
  sleep 0.1
done
expect_match "journal: generation 1's cgroup killed" "$retired" "left 2 processes in its cgroup; killed them|its cgroup killed: ([2-9]|[1-9][0-9]+) processes"
survivors=0
for p in $old; do sd_run test -d "/proc/$p" && survivors=$((survivors + 1)); done
expect_eq "generation 1's escapees alive after the reload" "$survivors" 0
expect_eq "MainPID after the reload (steward still runs)" "$(show MainPID)" "$main"
expect_eq "request served by generation 2" "$(http_code /)" 200
new=$(sd_run cat /run/steward/escapees.pids | tr '\n' ' ')
new=${new#"$old"}
alive=0
for p in $new; do sd_run test -d "/proc/$p" && alive=$((alive + 1)); done
expect_eq "generation 2's escapees untouched" "$alive" 2
sd_systemctl stop "$UNIT" || fail "systemctl stop failed"
expect_eq Result "$(show Result)" success
survivors=0
for p in $new; do sd_run test -d "/proc/$p" && survivors=$((survivors + 1)); done
expect_eq "generation 2's escapees alive after the stop" "$survivors" 0
sd_run rm -f /run/steward/escapees.pids /etc/steward/escapees.sh
end

# 17 -----------------------------------------------------------------------------------
# A hung child (SIGSTOP): steward withholds WATCHDOG=1 while its probe fails, replaces it
# after health.failures, and pings again once generation 2 serves. Each ping moves the
# unit's WatchdogTimestampMonotonic (systemd's clock, as the journal's): a sampler records
# every value it takes, and the journal says when the probes began failing, when the
# child was killed and when generation 2 served. The probe runs every second and every
# passing probe pings, so the failing stretch spans pings a steward that pinged anyway
# would have sent; WatchdogSec=10 is far beyond it, so systemd never fires.
begin "${SCENARIOS[16]}"
reset_unit
sd_run sed -i -e 's|^interval = "2s"|interval = "1s"|' -e 's|^timeout = "1s"|timeout = "300ms"|' /etc/steward/steward.toml
expect_match "health settings" "$(sd_run sed -n '/^\[health\]/,$p' /etc/steward/steward.toml | tr '\n' ' ')" 'interval = "1s" timeout = "300ms" failures = 3'
sd_dropin "$UNIT" 50-watchdog $'[Service]\nWatchdogSec=10\n'
sd_systemctl start "$UNIT" || fail "systemctl start failed"
main=$(show MainPID)
child=$(show StatusText | sed -n 's/^serving: generation [0-9]*, child pid \([0-9]*\).*$/\1/p')
samples=$(mktemp)
(while :; do show WatchdogTimestampMonotonic; sleep 0.1; done >"$samples" 2>/dev/null) &
sampler=$!
# Pings flow before the hang.
for _ in $(seq 1 100); do
  (($(sort -u "$samples" | grep -c '^[1-9]') >= 2)) && break
  sleep 0.1
done
c=$(cursor)
sd_run kill -STOP "$child"
served=""
for _ in $(seq 1 200); do
  served=$(journal_since "$c" -u "$UNIT" -o cat | grep -E '^serving: generation 2' || true)
  [[ -n $served ]] && break
  sleep 0.1
done
expect_match "journal: generation 2 serves" "$served" 'serving: generation 2'
serving_mono=$(journal_since "$c" -u "$UNIT" -o json | python3 -c '
import json, sys
recs = [json.loads(l) for l in sys.stdin if l.strip()]
print(next((r["__MONOTONIC_TIMESTAMP"] for r in recs if str(r.get("MESSAGE", "")).startswith("serving: generation 2")), 0))')
# Pings resume: one after generation 2 served.
for _ in $(seq 1 100); do
  awk -v s="$serving_mono" '$1 > s + 0 { found = 1 } END { exit !found }' "$samples" && break
  sleep 0.1
done
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
if verdict=$(journal_since "$c" -u "$UNIT" -o json | python3 -c "$(cat <<'EOF'
import json, sys
pings = sorted({int(l) for l in open(sys.argv[1]) if l.strip().isdigit() and int(l) > 0})
recs = [json.loads(l) for l in sys.stdin if l.strip()]
def first(pred):
    return next((int(r["__MONOTONIC_TIMESTAMP"]) for r in recs if pred(str(r.get("MESSAGE", "")))), None)
failed = first(lambda m: "generation 1 failed its health probe (1 in a row)" in m)
killed = first(lambda m: "failed 3 health probes in a row" in m)
served = first(lambda m: m.startswith("serving: generation 2"))
if None in (failed, killed, served):
    print(f"journal records missing: first failure {failed}, kill {killed}, generation 2 serving {served}")
    sys.exit(1)
problems = []
if not any(p < failed for p in pings): problems.append("no ping before the hang")
during = [p for p in pings if failed < p < killed]
if during: problems.append(f"{len(during)} pings while the probe failed ({during})")
if not any(p > served for p in pings): problems.append("no ping after generation 2 served")
if not failed < killed < served: problems.append("out of order")
if problems:
    print("; ".join(problems) + f" (pings {pings}; failed {failed}, killed {killed}, served {served})")
    sys.exit(1)
print(f"{len(pings)} pings seen; none in the {(killed - failed) / 1e6:.1f} s from the first failed probe to the kill; pinging again after generation 2 served")
EOF
)" "$samples"); then ok "$verdict"; else fail "$verdict"; fi
rm -f "$samples"
if sd_run test -d "/proc/$child"; then fail "hung child $child still there"; else ok "hung child $child is gone"; fi
expect_eq ActiveState "$(show ActiveState)" active
expect_eq "MainPID (systemd's watchdog never fired)" "$(show MainPID)" "$main"
expect_eq NRestarts "$(show NRestarts)" 0
expect_eq "request after the replacement" "$(http_code /)" 200
sd_systemctl stop "$UNIT" || fail "systemctl stop failed"
expect_eq Result "$(show Result)" success
end

# 18 -----------------------------------------------------------------------------------
# LimitNOFILE=1024:524288 in the shipped unit, and steward raises the child's soft limit to
# the hard limit: the proxy (with its built-in origin: three descriptors a request) serves
# 5,000 requests at once. systemd sets a hard limit above its own as close as it may
# (setrlimit_closest), so where the host allows less than 524288 the child gets that.
begin "${SCENARIOS[17]}"
reset_unit
c=$(cursor)
sd_systemctl start "$UNIT" || fail "systemctl start failed"
main=$(show MainPID)
child=$(show StatusText | sed -n 's/^serving: generation [0-9]*, child pid \([0-9]*\).*$/\1/p')
steward_limits=$(sd_run grep '^Max open files' "/proc/$main/limits" || true)
child_limits=$(sd_run grep '^Max open files' "/proc/$child/limits" || true)
hard=$(awk '{ print $5 }' <<<"$steward_limits")
expect_match "steward's open files (soft 1024)" "$steward_limits" '^Max open files +1024 +[0-9]+ +files'
expect_match "the child's open files (soft = hard)" "$child_limits" "^Max open files +$hard +$hard +files"
expect_match "journal" "$(journal_since "$c" -u "$UNIT" -o cat)" "child open-file limit $hard \\(soft; hard $hard\\)"
if verdict=$(sd_run python3 - <<'EOF'
import resource, socket, sys
N, DELAY = 5000, 3000
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
req = f"GET /delay/{DELAY} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
socks, errors = [], []
for i in range(N):
    try:
        s = socket.create_connection(("127.0.0.1", 6188), timeout=30)
        s.sendall(req)
        socks.append(s)
    except OSError as e:
        errors.append(f"request {i}: {e}")
ok = 0
for i, s in enumerate(socks):
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except OSError as e:
        errors.append(f"response {i}: {e}")
        continue
    if data.startswith(b"HTTP/1.1 200") and data.endswith(f"slept {DELAY} ms\n".encode()):
        ok += 1
    else:
        errors.append(f"response {i}: {data[:40]!r}")
print(f"{ok} of {N} concurrent /delay/{DELAY} requests answered 200" + (f"; {len(errors)} errors: {errors[:3]}" if errors else ""))
sys.exit(0 if ok == N else 1)
EOF
); then ok "$verdict"; else fail "$verdict"; fi
sd_systemctl stop "$UNIT" || fail "systemctl stop failed"
expect_eq Result "$(show Result)" success
end

# 19 -----------------------------------------------------------------------------------
# FileDescriptorStoreMax= in the shipped unit: steward stores the listeners it binds, and
# after a SIGKILL of steward itself the steward Restart= starts takes them back, so a
# client opening a fresh connection per request sees no refusal, only a wait. On a stop
# steward empties the store, so the ports refuse again once its generations let go.
begin "${SCENARIOS[18]}"
reset_unit
c=$(cursor)
sd_systemctl start "$UNIT" || fail "systemctl start failed"
main=$(show MainPID)
expect_match "journal: stored" "$(journal_since "$c" -u "$UNIT" -o cat)" "listener 127.0.0.1:6188 bound by steward, kept in systemd's fd store"
# Fresh connections for 5 s while steward is SIGKILLed 1 s in.
kill_steward() { sd_systemctl kill --kill-whom=main --signal=SIGKILL "$UNIT"; }
c=$(cursor)
verdict=$(fresh_connection_load 5 kill_steward)
# The child dies with steward (its parent-death signal), so the one request it may be
# serving at that instant is cut (a reset); the client is sequential, so at most one.
expect_match "fresh connections across steward's SIGKILL and restart ($verdict)" "$verdict" '^[1-9][0-9]* ok, 0 refused, [01] failed'
wait_active || fail "not restarted by Restart=on-failure"
[[ $(show MainPID) != "$main" ]] && ok "restarted with MainPID $(show MainPID)" || fail "MainPID unchanged"
expect_match "journal: taken back" "$(journal_since "$c" -u "$UNIT" -o cat)" "listener 127.0.0.1:6188 taken back from systemd's fd store"
# A stop during a 3 s request: the store's copy must not keep the port open.
slow_out=$(mktemp)
sd_run curl -s -m 10 -o /dev/null -w '%{http_code}' "http://$PROXY/delay/3000" >"$slow_out" 2>/dev/null &
slow=$!
sleep 0.5
sd_systemctl stop --no-block "$UNIT"
sleep 0.5
expect_eq "a new connection during the drain" "$(sd_run python3 -c 'import socket
try:
    socket.create_connection(("127.0.0.1", 6188), timeout=2)
    print("accepted")
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print(e)')" refused
wait "$slow" || true
expect_eq "the 3 s request in flight" "$(cat "$slow_out")" 200
rm -f "$slow_out"
for _ in $(seq 1 100); do
  [[ $(show ActiveState) == inactive ]] && break
  sleep 0.1
done
expect_eq Result "$(show Result)" success
# The same SIGKILL without room in the store: the listeners die with steward and the
# client is refused until the restarted steward binds them again (what this unit did
# before FileDescriptorStoreMax=; it also shows the load above can see a refusal).
sd_dropin "$UNIT" 50-no-store $'[Service]\nFileDescriptorStoreMax=0\n'
c=$(cursor)
sd_systemctl start "$UNIT" || fail "systemctl start failed"
expect_match "journal: not stored" "$(journal_since "$c" -u "$UNIT" -o cat)" "listeners not kept in systemd's fd store \\(FileDescriptorStoreMax=0\\)"
verdict=$(fresh_connection_load 5 kill_steward)
expect_match "without the store, refused ($verdict)" "$verdict" '^[0-9]+ ok, [1-9][0-9]* refused'
wait_active || fail "not restarted by Restart=on-failure"
sd_systemctl stop "$UNIT" || fail "systemctl stop failed"
end

# 20 -----------------------------------------------------------------------------------
# A package upgrade of steward itself: the binary is replaced on disk (a new file renamed
# over it), then `systemctl reload` re-executes steward in place. MainPID stays, its exe
# is the new file, and a client opening a fresh connection per request sees neither a
# refusal nor a failure. A broken new binary fails the reload (systemctl reload exits
# non-zero) and the old steward serves on. The shipped binary is bind-mounted read-only,
# so the unit runs a copy in /opt that the scenario can replace.
begin "${SCENARIOS[19]}"
reset_unit
sd_run install -d /opt/steward-upgrade
sd_run cp /usr/local/bin/steward /opt/steward-upgrade/steward
# WatchdogSec=2s: the watchdog must stay fed across the exec, or systemd restarts the unit
# (a new MainPID).
sd_dropin "$UNIT" 50-upgradable $'[Service]\nExecStart=\nExecStart=/opt/steward-upgrade/steward run --config /etc/steward/steward.toml\nWatchdogSec=2s\n'
sd_systemctl start "$UNIT" || fail "systemctl start failed"
main=$(show MainPID)
# upgrade NEW: NEW replaces steward's binary (renamed over it, as a package does) and
# `systemctl reload` runs; prints "reload exit E; ". Run under fresh connections for 4 s.
upgrade() {
  local rc=0
  sd_run cp "$1" /opt/steward-upgrade/steward.new
  sd_run chmod 755 /opt/steward-upgrade/steward.new
  sd_run mv /opt/steward-upgrade/steward.new /opt/steward-upgrade/steward
  sd_systemctl reload "$UNIT" >/dev/null 2>&1 || rc=$?
  printf 'reload exit %s; ' "$rc"
}
c=$(cursor)
verdict=$(fresh_connection_load 4 upgrade /usr/local/bin/steward)
expect_match "upgrade under fresh connections ($verdict)" "$verdict" '^reload exit 0; [1-9][0-9]* ok, 0 refused, 0 failed'
expect_eq MainPID "$(show MainPID)" "$main"
expect_eq "/proc/MainPID/exe" "$(sd_run readlink "/proc/$main/exe")" /opt/steward-upgrade/steward
log=$(journal_since "$c" -u "$UNIT" -o cat)
expect_match "journal: re-executed" "$log" "re-executed in place \\(pid $main unchanged\\): adopted generation 1"
expect_match "journal: the reload continued" "$log" "reload done: generation 2 serves"
expect_eq ActiveState "$(show ActiveState)" active
expect_eq NRestarts "$(show NRestarts)" 0
# A broken new binary: the reload fails with the reason, nothing else changes.
sd_write_file /opt/steward-upgrade/broken $'#!/bin/sh\necho "steward: broken build" >&2\nexit 1\n'
c=$(cursor)
verdict=$(fresh_connection_load 4 upgrade /opt/steward-upgrade/broken)
expect_match "broken binary under fresh connections ($verdict)" "$verdict" '^reload exit [1-9][0-9]*; [1-9][0-9]* ok, 0 refused, 0 failed'
expect_eq MainPID "$(show MainPID)" "$main"
expect_match "/proc/MainPID/exe" "$(sd_run readlink "/proc/$main/exe")" '\(deleted\)$'
expect_match "journal: the reason" "$(journal_since "$c" -u "$UNIT" -o cat)" "refused the hand-over: steward: broken build"
expect_match StatusText "$(show StatusText)" "reload failed: steward's upgrade"
expect_eq "request after the failed upgrade" "$(http_code /)" 200
c=$(cursor)
sd_systemctl stop "$UNIT" || fail "systemctl stop failed"
expect_eq Result "$(show Result)" success
expect_no_systemd_kill "$c"
end

# ---------------------------------------------------------------------------------------
echo
echo "| scenario                                      | seconds | Result     |      |"
echo "|-----------------------------------------------|---------|------------|------|"
printf '%s\n' "${summary[@]}"
total=${#summary[@]}
echo
echo "systemd: $((total - failures)) passed, $failures failed"
((failures == 0))
