#!/usr/bin/env bash
# Stop the test Slurm cluster started by tests/slurm/start.sh STATE.
#
#   tests/slurm/stop.sh STATE
#
# Only the processes named in STATE/run/*.pid are signalled (SIGTERM, then SIGKILL after a
# bounded wait), and only if their command line still names the expected program: a PID that was
# reused by an unrelated process after a crash is left alone. Order: slurmd, slurmctld, slurmdbd,
# MariaDB, munged (each waits for the previous one, so that nothing logs errors while its peer
# disappears). Jobs still queued or running are cancelled first; a leftover slurmstepd of this
# cluster is killed at the end.
set -uo pipefail

STATE=${1:?usage: stop.sh STATE}
[ -d "$STATE" ] || { echo "[slurm/stop] no such folder: $STATE" >&2; exit 1; }
STATE="$(cd "$STATE" && pwd -P)"
RUN=$STATE/run
WAIT=${SLURM_STOP_TIMEOUT:-20}   # seconds per daemon before SIGKILL

if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "[slurm/stop] must run as root" >&2; exit 1; }
    exec sudo -E bash "$0" "$@"
fi

log() { echo "[slurm/stop] $*" >&2; }

# is_ours PID PATTERN: the process exists and its command line matches PATTERN.
is_ours() {
    local cmd
    cmd=$(tr '\0' ' ' 2>/dev/null < "/proc/$1/cmdline") || return 1
    [[ "$cmd" == *$2* ]]
}

stop_one() {  # stop_one NAME PIDFILE PATTERN
    local name=$1 pidfile=$2 pattern=$3 pid deadline
    [ -s "$pidfile" ] || return 0
    pid=$(tr -dc '0-9' < "$pidfile")
    if [ -z "$pid" ] || ! is_ours "$pid" "$pattern"; then
        rm -f "$pidfile"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null
    deadline=$((SECONDS + WAIT))
    while is_ours "$pid" "$pattern"; do
        if [ $SECONDS -ge $deadline ]; then
            log "$name ($pid) still alive after ${WAIT}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null
            sleep 0.5
            break
        fi
        sleep 0.1
    done
    # A zombie (parent not reaping) still has /proc/PID but an empty cmdline: counts as gone.
    rm -f "$pidfile"
    log "stopped $name ($pid)"
}

# Cancel the jobs still queued or running first: with proctrack/linuxproc a stopped slurmd leaves
# its job steps running. Bounded: KillWait is 5 s in our slurm.conf.
if [ -s "$RUN/slurmctld.pid" ] && is_ours "$(tr -dc '0-9' < "$RUN/slurmctld.pid")" slurmctld; then
    export SLURM_CONF=$STATE/etc/slurm.conf
    jobs=$(timeout 10 squeue -h -o %A 2>/dev/null | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
        log "cancelling jobs $jobs"
        # shellcheck disable=SC2086
        timeout 10 scancel $jobs 2>/dev/null
        deadline=$((SECONDS + 15))
        while [ $SECONDS -lt $deadline ] && [ -n "$(timeout 5 squeue -h -o %A 2>/dev/null)" ]; do
            sleep 0.5
        done
    fi
fi

stop_one slurmd "$RUN/slurmd.pid" slurmd
stop_one slurmctld "$RUN/slurmctld.pid" slurmctld
stop_one slurmdbd "$RUN/slurmdbd.pid" slurmdbd
stop_one mariadb "$RUN/mysqld.pid" "--datadir=$STATE/mysql"
stop_one munged "$RUN/munged.pid" munged

# Leftover slurmstepd of this cluster (and the job processes under it): they inherited
# SLURM_CONF=$STATE/etc/slurm.conf from slurmd. Normally none remain after the scancel above.
descendants() {  # descendants PID: all processes below PID, children first listed
    local child
    for child in $(pgrep -P "$1" 2>/dev/null); do
        echo "$child"
        descendants "$child"
    done
}
for pid in $(pgrep -x slurmstepd 2>/dev/null); do
    if tr '\0' '\n' 2>/dev/null < "/proc/$pid/environ" \
            | grep -qxF "SLURM_CONF=$STATE/etc/slurm.conf"; then
        tree=$(descendants "$pid" | tr '\n' ' ')
        log "killing leftover slurmstepd $pid ${tree:+and the job processes $tree}"
        # Stop the step daemon first so that it does not restart anything, then its tree.
        kill -STOP "$pid" 2>/dev/null
        # shellcheck disable=SC2086
        kill -KILL $tree "$pid" 2>/dev/null
    fi
done
exit 0
