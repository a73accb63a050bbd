#!/usr/bin/env bash
# Proves tests/systemd/lib.sh: boot, files, units (notify, drop-in, stop timeout), D-Bus, and a teardown
# that leaves nothing behind. Exit 0 = pass (or SKIPPED), 1 = fail.
# SELFTEST_HOLD=<seconds> pauses after boot (to test interrupting a run).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

if ! reason=$(sd_can_run); then
    echo "SKIPPED: $reason"
    exit 0
fi

fail() {
    echo "FAIL: $*" >&2
    exit 1
}
assert_eq() {
    [[ $2 == "$3" ]] || fail "$1: expected '$3', got '$2'"
    echo "ok   $1 = $2"
}
t_start=$(_sd_now_us)
timing() { echo "time $1: $(_sd_seconds_since "$2")s"; }

sd_boot selftest "$here/fixtures:/opt/test/bin"
echo "time boot: ${SD_BOOT_SECONDS}s (machine $SD_MACHINE, nspawn pid $SD_NSPAWN_PID, container pid1 $SD_PID1)"

if [[ -n ${SELFTEST_HOLD:-} ]]; then
    echo "holding ${SELFTEST_HOLD}s"
    # "& wait": a signal interrupts wait at once, a foreground sleep would delay the trap.
    sleep "$SELFTEST_HOLD" &
    wait $!
fi

# --- basics ---------------------------------------------------------------------------------------------
assert_eq hostname "$(sd_run hostname)" selftest
assert_eq "system state" "$(sd_systemctl is-system-running)" running
assert_eq "bind mount visible" "$(sd_run sh -c 'test -x /opt/test/bin/notify-svc.sh && echo yes')" yes
if sd_run touch /opt/test/bin/should-fail 2>/dev/null; then
    fail "bind mount is writable"
fi
echo "ok   bind mount is read-only"
rc=0
sd_run sh -c 'echo out; echo err >&2; exit 7' >/dev/null 2>&1 || rc=$?
assert_eq "sd_run exit code" "$rc" 7

# --- files inside the container -------------------------------------------------------------------------
toml=$'[supervisor]\nname = "selftest"\n'
sd_write_file /etc/steward/selftest.toml "$toml" 0600
assert_eq "written file" "$(sd_run cat /etc/steward/selftest.toml)" "${toml%$'\n'}"
assert_eq "written mode" "$(sd_run stat -c %a /etc/steward/selftest.toml)" 600
sd_write_file /etc/steward/from-stdin.txt - <<<"via stdin"
assert_eq "written from stdin" "$(sd_run cat /etc/steward/from-stdin.txt)" "via stdin"
[[ ! -e /etc/steward/selftest.toml ]] || fail "file written inside the container appeared on the host"
echo "ok   host /etc untouched"

# --- Type=notify unit: start, status, main PID, D-Bus, clean stop ---------------------------------------
t=$(_sd_now_us)
sd_install_unit "$here/fixtures/selftest-notify.service"
sd_systemctl start selftest-notify.service
timing "install+start notify unit" "$t"
assert_eq ActiveState "$(sd_show selftest-notify.service ActiveState)" active
assert_eq SubState "$(sd_show selftest-notify.service SubState)" running
main=$(sd_show selftest-notify.service MainPID)
[[ $main =~ ^[0-9]+$ && $main -gt 1 ]] || fail "MainPID '$main'"
assert_eq StatusText "$(sd_show selftest-notify.service StatusText)" "selftest: serving as pid $main"
assert_eq "MainPID runs the script" "$(sd_run cat "/proc/$main/cmdline" | tr '\0' ' ')" \
    "/bin/sh /opt/test/bin/notify-svc.sh "
# What the supervisor does at run time: find its unit by PID, read its stop timeout in microseconds.
path=$(sd_run busctl call org.freedesktop.systemd1 /org/freedesktop/systemd1 \
    org.freedesktop.systemd1.Manager GetUnitByPID u "$main")
assert_eq "GetUnitByPID(MainPID)" "$path" 'o "/org/freedesktop/systemd1/unit/selftest_2dnotify_2eservice"'
path=${path#o \"} path=${path%\"}
assert_eq "D-Bus TimeoutStopUSec" "$(sd_run busctl get-property org.freedesktop.systemd1 "$path" \
    org.freedesktop.systemd1.Service TimeoutStopUSec)" "t 7000000"
t=$(_sd_now_us)
sd_systemctl stop selftest-notify.service
timing "stop notify unit" "$t"
assert_eq "Result after stop" "$(sd_show selftest-notify.service Result)" success
assert_eq "ActiveState after stop" "$(sd_show selftest-notify.service ActiveState)" inactive

# --- SIGTERM ignored: drop-in timeout, Result=timeout, journal ------------------------------------------
sd_install_unit "$here/fixtures/selftest-stubborn.service" 10-stop-timeout $'[Service]\nTimeoutStopSec=2\n'
assert_eq "drop-in TimeoutStopSec" "$(sd_show selftest-stubborn.service TimeoutStopUSec)" 2s
sd_systemctl start selftest-stubborn.service
assert_eq "stubborn StatusText" "$(sd_show selftest-stubborn.service StatusText)" "ignoring SIGTERM"
t=$(_sd_now_us)
sd_systemctl stop selftest-stubborn.service # exits 0 even though systemd had to SIGKILL
timing "stop stubborn unit (expect ~2s)" "$t"
assert_eq "Result after stop timeout" "$(sd_show selftest-stubborn.service Result)" timeout
journal=$(sd_journal -u selftest-stubborn.service -o cat)
for line in "State 'stop-sigterm' timed out. Killing." "Failed with result 'timeout'."; do
    grep -qF "$line" <<<"$journal" || fail "journal lacks \"$line\"; journal was:"$'\n'"$journal"
    echo "ok   journal has \"$line\""
done

# --- teardown leaves nothing ----------------------------------------------------------------------------
declare -A starts=()
for pid in "$SD_NSPAWN_PID" "$SD_PID1"; do
    starts[$pid]=$(_sd_starttime "$pid")
done
work=$SD_WORK tag=$SD_TAG machine=$SD_MACHINE cgroups=("${SD_CGROUPS[@]}")
sd_teardown
echo "time teardown: ${SD_TEARDOWN_SECONDS}s"
for pid in "${!starts[@]}"; do
    [[ $(_sd_starttime "$pid") != "${starts[$pid]}" ]] || fail "process $pid still exists after teardown"
done
for d in "$work" "${cgroups[@]}" /run/systemd/nspawn/propagate/"$machine"; do
    [[ ! -e $d ]] || fail "$d still exists after teardown"
done
if grep -F "$tag" /proc/self/mountinfo; then
    fail "mounts of $tag visible on the host"
fi
echo "ok   no processes, cgroups, work dir, /run dirs or mounts left"
sd_teardown # idempotent
echo "time total: $(_sd_seconds_since "$t_start")s"
echo PASS
