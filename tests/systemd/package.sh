#!/usr/bin/env bash
# The Debian package (`make deb`) on a fresh Debian 12 under a real systemd 252, as an
# operator installs it: `dpkg -i`, then `systemctl enable --now steward-proxy`, then an
# upgrade (running, and stopped), an edited conffile, removal and purge. Every verdict is
# read from systemd, dpkg or the proxy itself.
#
# The container's root is a throw-away overlay of this host's Debian 12 root, on which
# steward was never installed (the suite fails if it finds one, as the test would then
# prove nothing). Needs root and systemd-nspawn, as tests/systemd/run.sh.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=tests/systemd/lib.sh
source "$repo/tests/systemd/lib.sh"

UNIT=steward-proxy.service
STEPS=(
  "P1 dpkg -i: user, files, conffiles; enabled, not started"
  "P2 systemctl enable --now serves, as the steward user"
  "P3 upgrade while running: re-executed in place, nothing refused, edited conffile kept"
  "P4 upgrade while stopped: stays stopped; disable kept"
  "P5 dpkg -r stops and masks; dpkg -P forgets"
)

if ! reason=$(sd_can_run); then
  for s in "${STEPS[@]}"; do echo "SKIPPED: package step $s: $reason"; done
  if [[ ${CI:-} == true ]]; then
    echo "FAILED: the package test must run on CI (root) but cannot: $reason"
    exit 1
  fi
  exit 0
fi
debs=("$repo"/target/debian/steward_*.deb)
if [[ ${#debs[@]} -ne 1 || ! -f ${debs[0]} ]]; then
  echo "FAILED: expected one target/debian/steward_*.deb, found: ${debs[*]}: run 'make deb' first"
  exit 1
fi
deb=${debs[0]}
if [[ -e /usr/bin/steward || -e /etc/steward ]]; then
  echo "FAILED: this host has /usr/bin/steward or /etc/steward: the container (an overlay of this root) would not be a fresh install"
  exit 1
fi

failures=0
summary=()
# shellcheck source=tests/systemd/expect.sh
source "$repo/tests/systemd/expect.sh"
# shellcheck source=tests/systemd/load.sh
source "$repo/tests/systemd/load.sh"
PROXY=127.0.0.1:6188
begin() {
  current=$1
  scenario_failed=0
  echo "== step $current"
}
end() {
  if ((scenario_failed)); then
    failures=$((failures + 1))
    summary+=("| $current | FAIL |")
    echo "  -- journal of $UNIT (last 30 lines):"
    sd_journal -u "$UNIT" -n 30 -o short-monotonic | sed 's/^/     /'
  else
    summary+=("| $current | pass |")
  fi
}
show() { sd_show "$UNIT" "$1"; }
http_code() { sd_run curl -s -o /dev/null -m 10 -w '%{http_code}' "http://127.0.0.1:6188$1" || true; }
dpkg_i() { sd_run env DEBIAN_FRONTEND=noninteractive dpkg -i "/opt/steward-pkg/${deb##*/}" 2>&1; }

sd_boot steward-pkg "$(dirname "$deb"):/opt/steward-pkg"
echo "container booted in ${SD_BOOT_SECONDS}s; installing ${deb##*/}"
# A Docker-built root (as this host's may be) carries /usr/sbin/policy-rc.d answering 101,
# which tells deb-systemd-invoke to start, restart and stop nothing, as in an image build.
# A Debian host installed as such has none; the overlay's copy is removed to be one.
sd_run rm -f /usr/sbin/policy-rc.d

# P1 ------------------------------------------------------------------------------------
begin "${STEPS[0]}"
if out=$(dpkg_i); then ok "dpkg -i exits 0"; else fail "dpkg -i failed: $out"; fi
# shellcheck disable=SC2016 # ${Status} and ${Conffiles} are dpkg-query's, not the shell's
expect_eq "package state" "$(sd_run dpkg-query -W -f='${Status}' steward)" "install ok installed"
expect_match "service user" "$(sd_run getent passwd steward)" '^steward:x:[0-9]+:[0-9]+:'
for f in /usr/bin/steward /usr/bin/steward-proxy /lib/systemd/system/$UNIT \
  /usr/lib/sysusers.d/steward.conf /usr/share/man/man1/steward.1.gz \
  /usr/share/bash-completion/completions/steward /etc/steward/steward.toml; do
  if sd_run test -e "$f"; then ok "$f installed"; else fail "$f missing"; fi
done
# shellcheck disable=SC2016
expect_eq "conffiles" "$(sd_run dpkg-query -W -f='${Conffiles}' steward | awk '{print $1}' | sort | tr '\n' ' ')" \
  "/etc/steward/pingora.yaml /etc/steward/proxy.toml /etc/steward/steward.toml "
expect_eq "is-enabled" "$(sd_systemctl is-enabled "$UNIT" || true)" enabled
expect_eq "ActiveState after install" "$(show ActiveState)" inactive
expect_match "the unit's ExecStart" "$(show ExecStart)" 'path=/usr/bin/steward ; argv\[\]=/usr/bin/steward run --config /etc/steward/steward.toml'
expect_match "man steward" "$(sd_run sh -c 'MANPAGER=cat man -P cat steward 2>/dev/null | head -5' || true)" 'steward'
expect_match "bash completion" "$(sd_run bash -c 'source /usr/share/bash-completion/completions/steward && complete -p steward')" 'complete .* steward$'
if out=$(sd_run steward check --unit "$UNIT" 2>&1); then
  ok "steward check --unit on the installed unit exits 0"
else
  fail "steward check --unit on the installed unit: $out"
fi
end

# P2 ------------------------------------------------------------------------------------
begin "${STEPS[1]}"
if out=$(sd_systemctl enable --now "$UNIT" 2>&1); then ok "systemctl enable --now exits 0"; else fail "enable --now: $out"; fi
expect_eq ActiveState "$(show ActiveState)" active
expect_eq "GET / through the proxy" "$(http_code /)" 200
main=$(show MainPID)
expect_eq "MainPID's program" "$(sd_run readlink "/proc/$main/exe")" /usr/bin/steward
expect_eq "MainPID's user" "$(sd_run stat -c %U "/proc/$main")" steward
expect_match StatusText "$(show StatusText)" '^serving: generation 1, child pid [0-9]+$'
end

# P3 ------------------------------------------------------------------------------------
begin "${STEPS[2]}"
sd_run sh -c 'echo "# edited by the operator" >> /etc/steward/proxy.toml'
child=$(sd_run pgrep -P "$main" -x steward-proxy || true)
# Prints "dpkg exit E; " for fresh_connection_load's verdict.
upgrade_package() {
  local rc=0
  dpkg_i >/dev/null || rc=$?
  printf 'dpkg exit %s; ' "$rc"
}
verdict=$(fresh_connection_load 8 upgrade_package)
expect_match "dpkg -i over the running package, under fresh connections ($verdict)" "$verdict" '^dpkg exit 0; [1-9][0-9]* ok, 0 refused, 0 failed'
expect_eq "ActiveState after the upgrade" "$(show ActiveState)" active
expect_eq "MainPID after the upgrade (re-executed in place)" "$(show MainPID)" "$main"
expect_eq "/proc/MainPID/exe: the new file, not a deleted one" "$(sd_run readlink "/proc/$main/exe")" /usr/bin/steward
new_child=$(sd_run pgrep -P "$main" -x steward-proxy || true)
if [[ -n $new_child && $new_child != "$child" ]]; then ok "a new generation serves: child pid $child -> $new_child"; else fail "the child was not replaced: $child -> $new_child"; fi
expect_eq "the child's program" "$(sd_run readlink "/proc/$new_child/exe")" /usr/bin/steward-proxy
expect_eq NRestarts "$(show NRestarts)" 0
expect_eq "GET / after the upgrade" "$(http_code /)" 200
expect_eq "the operator's edit" "$(sd_run tail -n 1 /etc/steward/proxy.toml)" "# edited by the operator"
end

# P4 ------------------------------------------------------------------------------------
begin "${STEPS[3]}"
sd_systemctl stop "$UNIT"
if out=$(dpkg_i); then ok "dpkg -i over the stopped package exits 0"; else fail "dpkg -i: $out"; fi
expect_eq "ActiveState after the upgrade" "$(show ActiveState)" inactive
expect_eq "is-enabled" "$(sd_systemctl is-enabled "$UNIT" || true)" enabled
# The administrator's choice outlives an upgrade (deb-systemd-helper's state).
sd_systemctl disable --quiet "$UNIT"
if out=$(dpkg_i); then ok "dpkg -i over the disabled package exits 0"; else fail "dpkg -i: $out"; fi
expect_eq "is-enabled after an upgrade of a disabled unit" "$(sd_systemctl is-enabled "$UNIT" || true)" disabled
sd_systemctl enable --quiet "$UNIT"
end

# P5 ------------------------------------------------------------------------------------
begin "${STEPS[4]}"
sd_systemctl start "$UNIT"
expect_eq "ActiveState before removal" "$(show ActiveState)" active
if out=$(sd_run dpkg -r steward 2>&1); then ok "dpkg -r exits 0"; else fail "dpkg -r: $out"; fi
expect_eq "ActiveState after removal" "$(show ActiveState)" inactive
if sd_run test -e /usr/bin/steward; then fail "/usr/bin/steward still there"; else ok "binaries removed"; fi
if sd_run test -e /etc/steward/steward.toml; then ok "conffiles kept by dpkg -r"; else fail "conffiles removed by dpkg -r"; fi
expect_eq "is-enabled after removal" "$(sd_systemctl is-enabled "$UNIT" 2>/dev/null || true)" masked
if out=$(sd_run dpkg -P steward 2>&1); then ok "dpkg -P exits 0"; else fail "dpkg -P: $out"; fi
if sd_run test -e /etc/steward/steward.toml; then fail "conffiles still there after purge"; else ok "conffiles purged"; fi
expect_match "the steward user after purge (Debian keeps system users)" "$(sd_run getent passwd steward || true)" '^steward:'

expect_match "is-enabled after purge" "$(sd_systemctl is-enabled "$UNIT" 2>&1 || true)" 'not-found|No such file|Failed to get unit file state'
end

echo
echo "| package step | result |"
echo "|---|---|"
printf '%s\n' "${summary[@]}"
echo "package: $((${#STEPS[@]} - failures)) passed, $failures failed"
((failures == 0))
