# shellcheck shell=bash
# `steward check --unit` against the live unit under a real systemd 252, and the same
# findings at `steward run`'s start-up. Sourced by run.sh, which calls scenario_check inside
# its booted container; it uses run.sh's helpers (begin, end, ok, fail, expect_eq,
# expect_match, reset_unit, cursor, journal_since, show) and $UNIT.

# check_live [args...]: runs steward check on the live unit; sets $check_out and $check_code.
check_live() {
  check_code=0
  check_out=$(sd_run /usr/local/bin/steward check --unit "$UNIT" --config /etc/steward/steward.toml "$@") ||
    check_code=$?
}

scenario_check() {
  begin "${SCENARIOS[11]}"
  reset_unit

  # A drop-in of the kind `systemctl edit` writes: systemd's effective KillMode changes.
  sd_dropin "$UNIT" 50-kill-mode $'[Service]\nKillMode=control-group\n'
  check_live
  expect_eq "check exit status, KillMode=control-group drop-in" "$check_code" 1
  expect_match "finding" "$check_out" 'warning\[kill-mode-not-mixed\]: systemctl stop sends SIGTERM to the child'
  expect_match "located in the drop-in" "$check_out" \
    "fix: /etc/systemd/system/$UNIT.d/50-kill-mode.conf:2: KillMode=mixed"
  expect_match "read live" "$check_out" "unit $UNIT \\(via D-Bus: /etc/systemd/system/$UNIT, /etc/systemd/system/$UNIT.d/50-kill-mode.conf\\)"
  check_live --format json
  expect_match "JSON: the finding and status 1" "$check_out" '"id": "kill-mode-not-mixed"'
  expect_match "JSON: status" "$check_out" '"status": 1'
  # Without the bus, `systemctl show` (systemd's private socket) gives the same answer.
  local fallback
  fallback=$(sd_run env DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent \
    /usr/local/bin/steward check --unit "$UNIT" --config /etc/steward/steward.toml || true)
  expect_match "read with systemctl show" "$fallback" "unit $UNIT \\(via systemctl show: "
  expect_match "same finding via systemctl show" "$fallback" \
    "fix: /etc/systemd/system/$UNIT.d/50-kill-mode.conf:2: KillMode=mixed"

  # As shipped: nothing but the deliberate infos about the shipped pingora.yaml.
  sd_run rm -f "/etc/systemd/system/$UNIT.d/50-kill-mode.conf"
  sd_systemctl daemon-reload
  check_live
  expect_eq "check exit status, shipped unit" "$check_code" 0
  expect_match "summary, shipped unit" "$check_out" 'steward check: 0 errors, 0 warnings, 4 infos'

  # The live stop timeout counts: TimeoutStopSec=4 leaves no room for the 5 s margin.
  sd_dropin "$UNIT" 50-short $'[Service]\nTimeoutStopSec=4\n'
  check_live
  expect_eq "check exit status, TimeoutStopSec=4" "$check_code" 2
  expect_match "margin finding" "$check_out" 'error\[margin-exceeds-timeout\]'

  # An error finding stops `steward run` at start with 78, named in the journal.
  reset_unit
  sd_dropin "$UNIT" 50-forking $'[Service]\nType=forking\n'
  local c
  c=$(cursor)
  if sd_systemctl start "$UNIT" 2>/dev/null; then
    fail "start succeeded with Type=forking"
  else
    ok "systemctl start failed (Type=forking)"
  fi
  # With Type=forking ExecStart is a control process: its status is in the journal, not
  # in ExecMainStatus.
  expect_eq "Result (Type=forking)" "$(show Result)" exit-code
  expect_match "journal: exit status 78" "$(journal_since "$c" -u "$UNIT" -o cat)" 'status=78/CONFIG'
  expect_match "journal: the finding" "$(journal_since "$c" -u "$UNIT" -o cat)" \
    "configuration error: /etc/systemd/system/$UNIT.d/50-forking.conf:2: systemctl start waits TimeoutStartSec for steward to fork"
  expect_match "journal: STEWARD_CHECK field" \
    "$(journal_since "$c" -u "$UNIT" -o verbose --output-fields=STEWARD_CHECK,STEWARD_SEVERITY)" \
    'STEWARD_CHECK=service-type'

  # A warning finding is logged and the start goes on.
  reset_unit
  sd_dropin "$UNIT" 50-notify-all $'[Service]\nNotifyAccess=all\n'
  c=$(cursor)
  sd_systemctl start "$UNIT" || fail "start failed with NotifyAccess=all (only a warning)"
  expect_eq "ActiveState (NotifyAccess=all)" "$(show ActiveState)" active
  expect_match "journal: the warning" "$(journal_since "$c" -u "$UNIT" -o cat)" \
    "steward check: /etc/systemd/system/$UNIT.d/50-notify-all.conf:2: any process of the unit"
  sd_systemctl stop "$UNIT" || fail "systemctl stop failed"

  reset_unit
  end "n/a"
}
