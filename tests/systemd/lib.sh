# shellcheck shell=bash
# shellcheck disable=SC2034 # SD_* state variables are read by the sourcing test scripts
#
# Boot a real systemd inside systemd-nspawn on a throw-away copy-on-write root, for end-to-end tests.
# Source it; usage and traps: tests/systemd/README.md; a complete example: tests/systemd/selftest.sh.
# Background and measurements: /work/shared/systemd-in-ci.md.
#
# Safety rules this file relies on (do not "simplify" them away):
# - systemd is only ever booted on the overlay root, never on the host's root.
# - no --private-users: the lower layer is the host root, ownership fixing could walk it.
# - nothing is killed by name: only our own nspawn PID and our own cgroup.
#
# One container per shell at a time; state lives in the SD_* variables below.

if [[ -n ${_SD_LIB_LOADED:-} ]]; then
    return 0
fi
_SD_LIB_LOADED=1

# Everything the harness creates on the host carries this prefix plus "<owner pid>-<owner start time>", so a
# later run can tell whether its owner is still alive (the start time guards against PID reuse).
SD_PREFIX=steward-sd
SD_WORK_BASE=${SD_WORK_BASE:-/var/tmp}
SD_BOOT_TIMEOUT=${SD_BOOT_TIMEOUT:-20}
SD_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

SD_NAME=''          # name given to sd_boot; the container's hostname
SD_MACHINE=''       # nspawn machine name: <name>-<owner pid>-<owner start time>, unique per run
SD_TAG=''           # steward-sd-<owner pid>-<owner start time>
SD_WORK=''          # host work dir (the tmpfs and overlay are only mounted inside nspawn's private namespace)
SD_LOG=''           # systemd-nspawn's output, including the container's console
SD_NSPAWN_PID=''
SD_PID1=''          # the container's systemd, as a host PID
SD_OWNER_PID=''
SD_CGROUPS=()       # harness cgroup dirs, one per hierarchy
SD_BOOT_SECONDS=''      # timings of the last sd_boot / sd_teardown, for test output
SD_TEARDOWN_SECONDS=''
declare -gA _SD_PREV_TRAP=()
_SD_TRAPS_INSTALLED=''

_sd_err() { printf 'sd: %s\n' "$*" >&2; }

# Microseconds; EPOCHREALTIME uses the locale's decimal separator.
_sd_now_us() { printf '%s\n' "${EPOCHREALTIME//[.,]/}"; }

_sd_seconds_since() { awk -v a="$1" -v b="$(_sd_now_us)" 'BEGIN { printf "%.3f", (b - a) / 1e6 }'; }

# Prints the start time (clock ticks since boot) of a PID, or nothing if it does not exist.
_sd_starttime() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    stat=${stat##*) }
    # shellcheck disable=SC2086 # word splitting of the stat fields is the point
    set -- $stat
    printf '%s\n' "${20}"
}

# Alive and not a zombie: a zombie nspawn still answers kill -0 until we reap it.
_sd_alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

# Is the owner encoded in "<anything>-<pid>-<starttime>" still running?
_sd_owner_alive() {
    local tag=$1 pid start
    [[ $tag =~ -([0-9]+)-([0-9]+)$ ]] || return 0   # not ours: treat as alive, never touch it
    pid=${BASH_REMATCH[1]} start=${BASH_REMATCH[2]}
    [[ $(_sd_starttime "$pid") == "$start" ]]
}

# The hierarchies in which processes are tracked. Hybrid (this CI host): v2 "unified" + v1 name=systemd.
# Pure v2: /sys/fs/cgroup itself. Pure v1: name=systemd only.
_sd_cgroup_roots() {
    if [[ $(stat -fc %T /sys/fs/cgroup 2>/dev/null) == cgroup2fs ]]; then
        printf '%s\n' /sys/fs/cgroup
        return 0
    fi
    [[ -e /sys/fs/cgroup/unified/cgroup.procs ]] && printf '%s\n' /sys/fs/cgroup/unified
    [[ -e /sys/fs/cgroup/systemd/cgroup.procs ]] && printf '%s\n' /sys/fs/cgroup/systemd
    return 0
}

_sd_cgroup_pids() {
    local f
    while IFS= read -r f; do
        cat "$f" 2>/dev/null || true
    done < <(find "$1" -name cgroup.procs 2>/dev/null)
}

# Kills every process in the cgroup subtrees and waits until they are gone. cgroup.kill (v2, kernel 5.14+)
# is atomic against forks; the v1 fallback repeats SIGKILL until the tree is empty.
_sd_cgroup_kill() {
    local cg pids i
    for cg in "$@"; do
        [[ -d $cg ]] || continue
        if [[ -e $cg/cgroup.kill ]]; then
            echo 1 >"$cg/cgroup.kill" 2>/dev/null || true
        fi
    done
    for ((i = 0; i < 100; i++)); do
        pids=''
        for cg in "$@"; do
            [[ -d $cg ]] && pids+=$(_sd_cgroup_pids "$cg")
        done
        [[ -z $pids ]] && break
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        sleep 0.02
    done
    return 0
}

_sd_cgroup_destroy() {
    local cg i
    _sd_cgroup_kill "$@"
    for cg in "$@"; do
        [[ -d $cg ]] || continue
        # Depth first: a cgroup dir can only be removed once its children are gone. Exiting tasks may
        # linger a few ms after SIGKILL, hence the retries.
        for ((i = 0; i < 50; i++)); do
            find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
            [[ -d $cg ]] || break
            sleep 0.02
        done
        [[ -d $cg ]] && _sd_err "could not remove cgroup $cg"
    done
    return 0
}

# nspawn leaves empty per-machine directories on a /run that is not a tmpfs.
_sd_clean_run_dirs() {
    local machine=$1 d
    for d in /run/systemd/nspawn/*/"$machine"; do
        [[ -d $d ]] && { rmdir "$d" 2>/dev/null || true; }
    done
    _sd_clean_run_parents
}

# Every harness nspawn holds a shared flock on $SD_WORK_BASE for its whole life (see sd_boot), so the
# exclusive lock means no harness container is starting or running: removing the shared parents cannot
# race with a concurrent nspawn's mkdir. Image lock files are left behind when nspawn is SIGKILLed; one
# nobody holds is garbage (flock -n fails while an nspawn holds it).
_sd_clean_run_parents() {
    local d f fd
    exec {fd}<"$SD_WORK_BASE" || return 0
    if flock -xn "$fd"; then
        for f in /run/systemd/nspawn/locks/inode-*; do
            [[ -f $f ]] && { flock -xn "$f" rm -f -- "$f" 2>/dev/null || true; }
        done
        for d in /run/systemd/nspawn/*/ /run/systemd/nspawn/; do
            [[ -d $d ]] && { rmdir "$d" 2>/dev/null || true; }
        done
    fi
    exec {fd}<&-
    return 0
}

# Removes what earlier runs left behind when their owner was SIGKILLed (no trap ran). The owner's
# pdeathsig has already asked nspawn to stop; whatever still runs in the cgroup is killed.
_sd_reap_stale() {
    local root d tag
    local -A stale=()
    for d in "$SD_WORK_BASE/$SD_PREFIX"-*; do
        [[ -d $d ]] && stale[${d##*/}]=1
    done
    while IFS= read -r root; do
        for d in "$root/$SD_PREFIX"-*; do
            [[ -d $d ]] && stale[${d##*/}]=1
        done
    done < <(_sd_cgroup_roots)
    for tag in "${!stale[@]}"; do
        [[ $tag =~ ^$SD_PREFIX-[0-9]+-[0-9]+$ ]] || continue
        _sd_owner_alive "$tag" && continue
        local cgs=()
        while IFS= read -r root; do
            cgs+=("$root/$tag")
        done < <(_sd_cgroup_roots)
        _sd_cgroup_destroy "${cgs[@]}"
        if [[ -d $SD_WORK_BASE/$tag ]]; then
            # Mounts only ever existed in the dead namespace; --one-file-system is a second guard.
            rm -rf --one-file-system "${SD_WORK_BASE:?}/$tag" || _sd_err "could not remove $SD_WORK_BASE/$tag"
        fi
    done
    for d in /run/systemd/nspawn/*/*; do
        [[ -d $d ]] || continue
        _sd_owner_alive "${d##*/}" || rmdir "$d" 2>/dev/null || true
    done
    _sd_clean_run_parents
}

# sd_can_run: 0 if a container can be booted here; otherwise prints the reason on stdout and returns 1.
sd_can_run() {
    local c
    if [[ $EUID -ne 0 ]]; then
        echo "needs root (EUID=$EUID)"
        return 1
    fi
    for c in systemd-nspawn setpriv unshare nsenter systemd-id128 flock find stat awk; do
        if ! command -v "$c" >/dev/null 2>&1; then
            echo "$c not found (apt-get install -y systemd-container util-linux)"
            return 1
        fi
    done
    if [[ ! -x /usr/lib/systemd/systemd ]]; then
        echo "/usr/lib/systemd/systemd not installed"
        return 1
    fi
    if [[ -z $(_sd_cgroup_roots) ]]; then
        echo "no usable cgroup hierarchy under /sys/fs/cgroup"
        return 1
    fi
    for c in $(_sd_cgroup_roots); do
        if [[ ! -w $c/cgroup.procs ]]; then
            echo "cgroup hierarchy $c is not writable"
            return 1
        fi
    done
    # A real overlay mount is the only reliable test (module missing, / on overlay with an incompatible
    # upper, seccomp in an outer container...). The tmpfs over /tmp exists only in this private namespace.
    if ! unshare --mount --propagation private -- sh -c '
            mount -t tmpfs sd-probe /tmp &&
            mkdir /tmp/u /tmp/w /tmp/r &&
            mount -t overlay -o lowerdir=/,upperdir=/tmp/u,workdir=/tmp/w sd-probe /tmp/r &&
            test -x /tmp/r/usr/lib/systemd/systemd' >/dev/null 2>&1; then
        echo "overlayfs with lowerdir=/ and a tmpfs upper is not usable"
        return 1
    fi
    return 0
}

# Runs on EXIT/INT/TERM. The teardown comes first so a slow previous handler cannot keep a container alive.
_sd_on_trap() {
    local rc=$? sig=$1 prev
    sd_teardown
    prev=${_SD_PREV_TRAP[$sig]:-}
    if [[ -n $prev ]]; then
        # Give the previous handler the $? it would have seen.
        if (exit "$rc"); then eval "$prev"; else eval "$prev"; fi
    fi
    if [[ $sig != EXIT ]]; then
        # Die from the signal itself so our caller sees 130/143; the EXIT trap still runs (idempotent).
        trap - "$sig"
        kill -s "$sig" "$BASHPID"
    fi
    return "$rc"
}

_sd_install_traps() {
    [[ $_SD_TRAPS_INSTALLED == "$BASHPID" ]] && return 0
    local sig prev
    for sig in EXIT INT TERM; do
        prev=$(trap -p "$sig")
        if [[ -n $prev ]]; then
            # "trap -- 'cmd' SIG": let the shell's own quoting give us cmd back.
            local parts
            eval "parts=($prev)"
            prev=${parts[2]}
        fi
        _SD_PREV_TRAP[$sig]=$prev
        # shellcheck disable=SC2064 # expand $sig now
        trap "_sd_on_trap $sig" "$sig"
    done
    _SD_TRAPS_INSTALLED=$BASHPID
}

# sd_boot <name> [<host dir>:<container dir> | --<raw nspawn option>]...
# Boots the container; host dirs are bind-mounted read-only. Must run in the shell that will use the
# container (not in $(...) or a pipeline): nspawn dies with the shell that started it.
sd_boot() {
    local name=${1:?sd_boot: name required}
    shift
    if [[ -n $SD_WORK ]]; then
        _sd_err "a container is already running in this shell ($SD_MACHINE); call sd_teardown first"
        return 1
    fi
    if [[ ! $name =~ ^[A-Za-z0-9][A-Za-z0-9-]*$ ]]; then
        _sd_err "invalid name '$name' (letters, digits, '-')"
        return 1
    fi
    local reason
    if ! reason=$(sd_can_run); then
        _sd_err "cannot run: $reason"
        return 1
    fi

    local t0
    t0=$(_sd_now_us)
    SD_OWNER_PID=$BASHPID
    local start
    start=$(_sd_starttime "$SD_OWNER_PID")
    SD_TAG=$SD_PREFIX-$SD_OWNER_PID-$start
    SD_NAME=$name
    # Hostnames are limited to 64 chars; the suffix must survive, it marks the owner.
    local suffix=-$SD_OWNER_PID-$start
    SD_MACHINE=${name:0:$((64 - ${#suffix}))}$suffix

    _sd_install_traps
    _sd_reap_stale

    local args=() a host ctr
    for a in "$@"; do
        if [[ $a == --* ]]; then
            args+=("$a")
            continue
        fi
        host=${a%%:*} ctr=${a#*:}
        if [[ $a != *:* || -z $host || $ctr != /* ]]; then
            _sd_err "bad bind spec '$a' (want <host dir>:<absolute container dir>)"
            return 1
        fi
        if [[ ! -e $host ]]; then
            _sd_err "bind source '$host' does not exist"
            return 1
        fi
        args+=("--bind-ro=$(realpath "$host"):$ctr")
    done

    # Work dir before cgroups: a run killed in between leaves a work dir that names its tag, so the next
    # run still finds (and removes) it.
    SD_WORK=$SD_WORK_BASE/$SD_TAG
    mkdir -p "$SD_WORK/tmp" "$SD_WORK/root"
    printf '%s\n' "$SD_MACHINE" >"$SD_WORK/machine"
    SD_LOG=$SD_WORK/nspawn.log

    local root
    SD_CGROUPS=()
    while IFS= read -r root; do
        # sd-run: for sd_run's nsenter processes, so that teardown's cgroup kill reaches them too.
        mkdir -p "$root/$SD_TAG/sd-run"
        SD_CGROUPS+=("$root/$SD_TAG")
    done < <(_sd_cgroup_roots)

    # Runs inside the private mount namespace: the tmpfs and overlay never appear on the host, and vanish
    # with nspawn even if nobody tears down.
    # shellcheck disable=SC2016 # expanded by the inner shell
    local script='
set -eu
work=$1; hostname=$2; machine=$3; shift 3
root=$work/root
mount -t tmpfs -o mode=0755 steward-sd "$work/tmp"
mkdir "$work/tmp/upper" "$work/tmp/work"
mount -t overlay -o "lowerdir=/,upperdir=$work/tmp/upper,workdir=$work/tmp/work" steward-sd "$root"
systemd-id128 new >"$root/etc/machine-id"
# systemd sets the hostname from /etc/hostname (the host'"'"'s) and would override --hostname.
printf "%s\n" "$hostname" >"$root/etc/hostname"
mkdir -p "$root/etc/systemd/system" "$root/etc/systemd/journald.conf.d"
# Only what tests need: basic early boot, sockets (dbus.socket: units ask systemd over D-Bus).
cat >"$root/etc/systemd/system/harness.target" <<EOF
[Unit]
Description=Steward test harness
Requires=sysinit.target sockets.target
Wants=dbus.socket
After=sysinit.target sockets.target dbus.socket
AllowIsolate=yes
EOF
# Volatile, unthrottled: assertions read the journal, a rate limit would drop lines silently.
cat >"$root/etc/systemd/journald.conf.d/harness.conf" <<EOF
[Journal]
Storage=volatile
RateLimitBurst=0
EOF
SYSTEMD_COLORS=0 SYSTEMD_LOG_COLOR=0 exec systemd-nspawn --quiet --directory="$root" --machine="$machine" --hostname="$hostname" \
    --register=no --keep-unit --private-network --link-journal=no --resolv-conf=off --timezone=off \
    --console=read-only "$@" \
    --boot systemd.unit=harness.target systemd.firstboot=no systemd.show_status=false systemd.log_color=0
'
    local cg
    (
        for cg in "${SD_CGROUPS[@]}"; do
            echo "$BASHPID" >"$cg/cgroup.procs" || exit 1
        done
        # Shared lock inherited by nspawn (it keeps stray fds, marked CLOEXEC, away from the container):
        # held while it lives, so teardowns of concurrent runs leave /run/systemd/nspawn alone.
        exec 9<"$SD_WORK_BASE" && flock -s 9 || exit 1
        # pdeathsig: if the owner shell is SIGKILLed, nspawn gets SIGTERM and halts the container.
        exec setpriv --pdeathsig TERM -- unshare --mount --propagation private -- \
            bash -c "$script" steward-sd-boot "$SD_WORK" "$SD_NAME" "$SD_MACHINE" "${args[@]}"
    ) </dev/null >"$SD_LOG" 2>&1 &
    SD_NSPAWN_PID=$!

    local deadline state='' pid ppid comm stat
    deadline=$(( $(_sd_now_us) + SD_BOOT_TIMEOUT * 1000000 ))
    while :; do
        if ! _sd_alive "$SD_NSPAWN_PID"; then
            _sd_err "systemd-nspawn exited during boot; its log:"
            cat "$SD_LOG" >&2
            return 1
        fi
        if [[ -z $SD_PID1 ]]; then
            # No /proc/<pid>/task/*/children on this kernel; the cgroup lists our few processes.
            for pid in $(_sd_cgroup_pids "${SD_CGROUPS[0]}"); do
                stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
                comm=${stat#*(} comm=${comm%)*}
                stat=${stat##*) }
                ppid=${stat#* } ppid=${ppid%% *}
                if [[ $comm == systemd && $ppid == "$SD_NSPAWN_PID" ]]; then
                    SD_PID1=$pid
                    break
                fi
            done
        fi
        if [[ -n $SD_PID1 ]]; then
            state=$(sd_run systemctl is-system-running 2>/dev/null) || true
            [[ $state == running || $state == degraded ]] && break
        fi
        if (( $(_sd_now_us) > deadline )); then
            _sd_err "boot did not finish within ${SD_BOOT_TIMEOUT}s (pid1=${SD_PID1:-none} state=${state:-none}); nspawn log:"
            cat "$SD_LOG" >&2
            [[ -n $SD_PID1 ]] && sd_run systemctl list-jobs --no-legend >&2 2>&1
            return 1
        fi
        sleep 0.03
    done

    # The unit under test looks up its own TimeoutStopUSec with GetUnitByPID; fail here, clearly, if the
    # bus is not there. The first call also socket-activates dbus-daemon, so tests do not pay for it.
    local out
    if ! out=$(sd_run busctl --timeout=10 call org.freedesktop.systemd1 /org/freedesktop/systemd1 \
            org.freedesktop.systemd1.Manager GetUnitByPID u 1 2>&1); then
        _sd_err "D-Bus GetUnitByPID does not work inside the container: $out"
        sd_run systemctl status --no-pager dbus.socket dbus.service >&2 2>&1
        return 1
    fi
    if [[ $state == degraded ]]; then
        _sd_err "note: container is degraded; failed units: $(sd_run systemctl list-units --failed --no-legend --plain | awk '{printf "%s ", $1}')"
    fi
    SD_BOOT_SECONDS=$(_sd_seconds_since "$t0")
    return 0
}

# sd_run <cmd...>: runs a short command inside the container; exit code, stdin, stdout and stderr pass
# through. Long-lived things should be units: the command is not supervised by the container's systemd.
sd_run() {
    if [[ -z $SD_PID1 ]]; then
        _sd_err "sd_run: no container (call sd_boot)"
        return 1
    fi
    (
        # Into the harness cgroup, because at halt systemd-shutdown SIGSTOPs every process in the
        # container; nsenter (outside, waiting for its child) then SIGSTOPs itself and would stay stopped
        # on the host forever. The cgroup kill in teardown reaches it there. Best effort: nspawn may
        # already have trimmed the dir during teardown.
        for cg in "${SD_CGROUPS[@]}"; do
            echo "$BASHPID" 2>/dev/null >"$cg/sd-run/cgroup.procs" || true
        done
        exec nsenter --target "$SD_PID1" --mount --uts --ipc --net --pid --cgroup -- \
            env -i PATH="$SD_PATH" SYSTEMD_PAGER=cat SYSTEMD_COLORS=0 LANG=C.UTF-8 "$@"
    )
}

# sd_systemctl <args...>
sd_systemctl() { sd_run systemctl --no-pager "$@"; }

# sd_journal <journalctl args...>: the journal is flushed first, so lines logged before the call are there.
sd_journal() {
    sd_run journalctl --sync || return
    sd_run journalctl --no-pager "$@"
}

# sd_show <unit> <Property>: prints the value only (timespans come out human-readable: "1min 30s").
sd_show() { sd_run systemctl show --property="${2:?sd_show: property}" --value -- "${1:?sd_show: unit}"; }

# sd_write_file <container path> <content|-> [mode]: writes content exactly (no newline added); "-" reads
# stdin. Written from inside the container so that symlinks resolve against the container's root.
sd_write_file() {
    local path=${1:?sd_write_file: path} content=${2?sd_write_file: content} mode=${3:-0644}
    # shellcheck disable=SC2016 # expanded by the inner shell
    local script='mkdir -p -- "$(dirname -- "$1")" && cat >"$1" && chmod "$2" -- "$1"'
    if [[ $content == - ]]; then
        sd_run sh -c "$script" sh "$path" "$mode"
    else
        printf '%s' "$content" | sd_run sh -c "$script" sh "$path" "$mode"
    fi
}

# sd_dropin <unit> <name> <content> [--no-reload]: /etc/systemd/system/<unit>.d/<name>.conf, then daemon-reload.
sd_dropin() {
    local unit=${1:?sd_dropin: unit} name=${2:?sd_dropin: name} content=${3?sd_dropin: content}
    name=${name%.conf}
    sd_write_file "/etc/systemd/system/$unit.d/$name.conf" "$content" || return
    [[ ${4:-} == --no-reload ]] || sd_run systemctl daemon-reload
}

# sd_install_unit <host unit file> [<dropin name> <dropin content>]: copies the unit unchanged into
# /etc/systemd/system, adds the optional drop-in, then one daemon-reload.
sd_install_unit() {
    local file=${1:?sd_install_unit: unit file} unit
    unit=${file##*/}
    if [[ ! -f $file ]]; then
        _sd_err "sd_install_unit: $file not found"
        return 1
    fi
    sd_write_file "/etc/systemd/system/$unit" - <"$file" || return
    if [[ $# -ge 3 ]]; then
        sd_dropin "$unit" "$2" "$3" --no-reload || return
    fi
    sd_run systemctl daemon-reload
}

# sd_log: what systemd-nspawn and the container console printed so far.
sd_log() { [[ -n $SD_LOG ]] && cat "$SD_LOG"; }

# sd_run commands still running at teardown (e.g. started with &) must go before the container halts.
# Otherwise systemd-shutdown SIGSTOPs them, their nsenter (outside, waiting) SIGSTOPs itself and never
# reaps them. Order matters too: kill nsenter first and its child is reparented to the *host's* PID 1
# (the reaper of nsenter's PID namespace), which may be slow to reap, while systemd-shutdown waits for the
# zombie. So: SIGKILL the processes inside the container's PID namespace, let each nsenter reap and exit,
# and only then SIGKILL whatever is left.
_sd_stop_sd_runs() {
    local cg runs=() pidns pid inner i pids
    for cg in "${SD_CGROUPS[@]}"; do
        runs+=("$cg/sd-run")
    done
    pidns=$(readlink "/proc/$SD_PID1/ns/pid" 2>/dev/null) || pidns=''
    if [[ -n $pidns && -d ${runs[0]:-} ]]; then
        for ((i = 0; i < 50; i++)); do
            inner=() pids=$(_sd_cgroup_pids "${runs[0]}")
            [[ -z $pids ]] && break
            for pid in $pids; do
                [[ $(readlink "/proc/$pid/ns/pid" 2>/dev/null) == "$pidns" ]] && inner+=("$pid")
            done
            if ((${#inner[@]})); then
                kill -KILL "${inner[@]}" 2>/dev/null || true
            fi
            # shellcheck disable=SC2086
            kill -CONT $pids 2>/dev/null || true
            sleep 0.01
        done
    fi
    _sd_cgroup_kill "${runs[@]}"
}

# sd_teardown: stops and removes everything sd_boot made. Idempotent; installed on EXIT/INT/TERM.
sd_teardown() {
    [[ -n $SD_WORK ]] || return 0
    # Only the shell that booted owns the container: a $(...) subshell must not tear it down.
    [[ $BASHPID == "$SD_OWNER_PID" ]] || return 0
    local t0 i
    t0=$(_sd_now_us)
    # A second Ctrl-C must not abort a half-done teardown (the handler re-raises after we return).
    trap '' INT TERM
    _sd_stop_sd_runs
    if [[ -n $SD_NSPAWN_PID ]]; then
        # SIGTERM makes nspawn ask PID 1 for an orderly halt (~0.2 s); the cgroup kill is the backstop.
        kill -TERM "$SD_NSPAWN_PID" 2>/dev/null || true
        for ((i = 0; i < 150; i++)); do
            _sd_alive "$SD_NSPAWN_PID" || break
            sleep 0.02
        done
        kill -KILL "$SD_NSPAWN_PID" 2>/dev/null || true
        # Reap it before removing the cgroups, and keep bash from reporting the job later.
        wait "$SD_NSPAWN_PID" 2>/dev/null || true
    fi
    _sd_cgroup_destroy "${SD_CGROUPS[@]}"
    if [[ -n ${SD_KEEP_LOG:-} && -f $SD_LOG ]]; then
        cp "$SD_LOG" "$SD_KEEP_LOG" || true
    fi
    rm -rf --one-file-system "${SD_WORK:?}" || _sd_err "could not remove $SD_WORK"
    _sd_clean_run_dirs "$SD_MACHINE"
    SD_TEARDOWN_SECONDS=$(_sd_seconds_since "$t0")
    SD_WORK='' SD_LOG='' SD_NSPAWN_PID='' SD_PID1='' SD_CGROUPS=() SD_MACHINE='' SD_NAME='' SD_TAG=''
    if [[ $_SD_TRAPS_INSTALLED == "$BASHPID" ]]; then
        trap '_sd_on_trap INT' INT
        trap '_sd_on_trap TERM' TERM
    fi
    return 0
}
