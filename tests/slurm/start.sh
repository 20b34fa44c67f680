#!/usr/bin/env bash
# Start a real single-node Slurm cluster (Debian's Slurm 22.05) on this machine, for the tests.
#
#   tests/slurm/start.sh [STATE]      # STATE: a folder for all state (default: a new mktemp -d)
#   eval "$(tests/slurm/start.sh /tmp/slurm)"   # or: source /tmp/slurm/env.sh
#   tests/slurm/stop.sh /tmp/slurm
#
# Every file and daemon lives in STATE: munge key and socket, a MariaDB data dir (private port and
# socket) for slurmdbd, slurm.conf/gres.conf/slurmdbd.conf, spool dirs, logs and PID files.
# Nothing in /etc is changed and no system service is started. The Debian packages are installed
# if missing. Ports are picked free at the first start and kept in STATE/ports.env.
#
# Running it again on a folder whose cluster runs prints the exports and exits; on a folder whose
# cluster was stopped it restarts the daemons on the same state (jobs and accounting kept).
#
# stdout: only `export VAR=...` lines (also written to STATE/env.sh); everything else -> stderr.
# On any failure: the relevant log tail on stderr, the daemons started so far are stopped, exit 1.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CLUSTER=localtest          # ClusterName (lower case: Slurm lowercases it anyway)
PARTITION=local
TIMEOUT=${SLURM_START_TIMEOUT:-60}   # seconds to wait for each daemon

log() { echo "[slurm/start] $*" >&2; }

# The daemons must run as root (slurmd switches to the job's user). Re-run under sudo if needed.
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { log "must run as root (no sudo found)"; exit 1; }
    exec sudo -E bash "$0" "$@"
fi

# ---------------------------------------------------------------------------------------------
# Packages (idempotent: apt only runs when one of the programs is missing).
need_install=0
for prog in slurmctld slurmd slurmdbd sinfo sacct sacctmgr munged mariadbd mariadb-install-db; do
    command -v "$prog" >/dev/null 2>&1 || [ -x "/usr/sbin/$prog" ] || need_install=1
done
if [ "$need_install" = 1 ]; then
    log "installing Slurm, munge and MariaDB from Debian (about 1 min)"
    export DEBIAN_FRONTEND=noninteractive
    # policy-rc.d may refuse to start services in containers: that is fine, we start our own.
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge slurmdbd mariadb-server; } >&2 \
        || { log "apt-get install failed"; exit 1; }
fi
export PATH="$PATH:/usr/sbin:/sbin"

# ---------------------------------------------------------------------------------------------
# State folder layout.
STATE="${1:-$(mktemp -d /tmp/slurm.XXXXXX)}"
mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd -P)"
# 755: non-root clients (sudo case) must read etc/slurm.conf and reach the munge socket.
chmod 755 "$STATE"
ETC=$STATE/etc; LOG=$STATE/log; RUN=$STATE/run; MUNGE=$STATE/munge
SPOOL_CTLD=$STATE/spool/ctld; SPOOL_D=$STATE/spool/slurmd; DB=$STATE/mysql
mkdir -p "$ETC" "$LOG" "$RUN" "$MUNGE" "$SPOOL_CTLD" "$SPOOL_D"
chmod 711 "$MUNGE"   # munged refuses a socket folder writable by others; 711 lets clients in
SOCK_MUNGE=$MUNGE/munge.socket
SOCK_DB=$RUN/mysqld.sock
# A Unix socket path is limited to 107 bytes (slurmstepd sockets also live in SPOOL_D).
if [ ${#SOCK_MUNGE} -gt 100 ] || [ $((${#SPOOL_D} + 30)) -gt 107 ]; then
    log "state folder path too long for Unix sockets: $STATE"; exit 1
fi

export SLURM_CONF=$ETC/slurm.conf   # slurmdbd/gres.conf are looked up next to it

# pid_alive PIDFILE: true if the process in PIDFILE runs and is the expected daemon (not a dead
# one waiting to be reaped, whose command line is empty, nor an unrelated process reusing the PID).
pid_alive() {
    local pid cmd name
    [ -s "$1" ] || return 1
    pid=$(tr -dc '0-9' < "$1")
    [ -n "$pid" ] || return 1
    cmd=$(tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline") || return 1
    name=$(basename "$1" .pid)
    [ "$name" = mysqld ] && name=mariadbd
    [[ "$cmd" == *"$name"* ]]
}

print_env() {
    cat > "$STATE/env.sh" <<EOF
export SLURM_CONF=$SLURM_CONF
EOF
    chmod 644 "$STATE/env.sh"
    cat "$STATE/env.sh"
}

# Already running on this folder? Then nothing to do.
if [ -f "$STATE/env.sh" ] && pid_alive "$RUN/munged.pid" && pid_alive "$RUN/mysqld.pid" \
        && pid_alive "$RUN/slurmdbd.pid" && pid_alive "$RUN/slurmctld.pid" \
        && pid_alive "$RUN/slurmd.pid" && timeout 10 sinfo -h >/dev/null 2>&1; then
    log "cluster already running in $STATE"
    print_env
    exit 0
fi

# On failure: show the log of the step that failed, stop what was started, exit 1.
CURRENT_LOG=""
on_error() {
    local rc=$?
    trap - ERR EXIT
    [ "$rc" = 0 ] && exit 0
    log "FAILED (exit $rc)"
    for f in $CURRENT_LOG; do
        [ -f "$f" ] && { echo "----- tail of $f -----" >&2; tail -n 40 "$f" >&2; }
    done
    "$HERE/stop.sh" "$STATE" >&2 2>&1 || true
    exit 1
}
trap on_error EXIT

fail() { log "$*"; exit 1; }

# wait_until DESC PIDFILE CMD...: run CMD each 0.2 s until it succeeds; fail after $TIMEOUT s or
# if the daemon of PIDFILE died (PIDFILE may also be "pid:NUMBER").
wait_until() {
    local desc=$1 pidfile=$2; shift 2
    local deadline=$((SECONDS + TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if [[ "$pidfile" == pid:* ]]; then
            [ -n "$(tr -d '\0' 2>/dev/null < "/proc/${pidfile#pid:}/cmdline")" ] \
                || fail "$desc: daemon died"
        elif [ -n "$pidfile" ] && [ -f "$pidfile" ] && ! pid_alive "$pidfile"; then
            fail "$desc: daemon died"
        elif [ -n "$pidfile" ] && [ ! -f "$pidfile" ] && [ $SECONDS -ge $((deadline - TIMEOUT + 10)) ]
        then
            fail "$desc: daemon died (no PID file after 10 s)"
        fi
        [ $SECONDS -ge $deadline ] && fail "$desc: not ready after ${TIMEOUT}s"
        sleep 0.2
    done
}

# ---------------------------------------------------------------------------------------------
# Ports: free ones picked at first start (not the defaults 6817-6819/3306, so a system Slurm or
# MariaDB can coexist), then kept so that a restart on the same folder reuses the same config.
port_free() {
    if command -v ss >/dev/null; then
        ! ss -Htan "( sport = :$1 )" 2>/dev/null | grep -q .
    else  # no ss: a refused connection means free (good enough here)
        ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}
if [ ! -f "$STATE/ports.env" ]; then
    for try in $(seq 50); do
        base=$((20000 + (RANDOM % 400) * 10))
        ok=1
        for p in $base $((base + 1)) $((base + 2)) $((base + 3)); do port_free $p || ok=0; done
        [ $ok = 1 ] && break
    done
    [ $ok = 1 ] || fail "no 4 free ports found"
    cat > "$STATE/ports.env" <<EOF
PORT_CTLD=$base
PORT_SLURMD=$((base + 1))
PORT_DBD=$((base + 2))
PORT_DB=$((base + 3))
EOF
fi
# shellcheck disable=SC1091
. "$STATE/ports.env"
log "state in $STATE; ports ctld=$PORT_CTLD slurmd=$PORT_SLURMD dbd=$PORT_DBD mariadb=$PORT_DB"

# ---------------------------------------------------------------------------------------------
# munge: private key and socket. Slurm daemons and clients find the socket via AuthInfo below.
CURRENT_LOG=$LOG/munged.log
if [ ! -s "$MUNGE/munge.key" ]; then
    dd if=/dev/urandom of="$MUNGE/munge.key" bs=1024 count=1 status=none
fi
chmod 600 "$MUNGE/munge.key"
if ! pid_alive "$RUN/munged.pid"; then
    rm -f "$SOCK_MUNGE" "$SOCK_MUNGE.lock"
    # munged forks into the background by itself; its stdio must not keep our caller's pipes.
    # --force: munged refuses a socket below a folder that others cannot traverse (pytest's
    # tmp folders are 700); root clients get through anyway, others would need o+x up the path.
    munged --force --socket="$SOCK_MUNGE" --key-file="$MUNGE/munge.key" \
        --pid-file="$RUN/munged.pid" --log-file="$LOG/munged.log" --seed-file="$MUNGE/munged.seed" \
        </dev/null >>"$LOG/munged.log" 2>&1 || fail "munged did not start"
fi
wait_until "munged" "$RUN/munged.pid" \
    bash -c "munge -n -S '$SOCK_MUNGE' | unmunge -S '$SOCK_MUNGE'"

# ---------------------------------------------------------------------------------------------
# MariaDB for slurmdbd: own data dir, socket and port, bound to 127.0.0.1, no my.cnf read.
CURRENT_LOG="$LOG/mysqld.log"
if [ ! -d "$DB/mysql" ]; then
    log "initialising MariaDB in $DB"
    mariadb-install-db --no-defaults --datadir="$DB" --user=root --skip-test-db \
        --auth-root-authentication-method=socket >"$LOG/mysqld.log" 2>&1 \
        || fail "mariadb-install-db failed"
fi
mysqld_pid=""
if ! pid_alive "$RUN/mysqld.pid"; then
    # setsid: own session, away from our caller's terminal and process group (in a script
    # without job control the child is no group leader, so setsid does not fork: $! is mariadbd).
    # --user=root: mariadbd refuses to run as root otherwise. --skip-name-resolve: match accounts
    # by IP (slurm@127.0.0.1) without DNS. Small buffer pool; a long lock wait as slurmdbd wants.
    setsid mariadbd --no-defaults --user=root --datadir="$DB" --socket="$SOCK_DB" \
        --port="$PORT_DB" --bind-address=127.0.0.1 --skip-name-resolve \
        --pid-file="$RUN/mysqld.pid" --log-error="$LOG/mysqld.log" \
        --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 \
        --max-allowed-packet=16M \
        </dev/null >>"$LOG/mysqld.log" 2>&1 &
    mysqld_pid=$!
fi
wait_until "MariaDB" "${mysqld_pid:+pid:$mysqld_pid}" \
    mariadb-admin --no-defaults --socket="$SOCK_DB" ping
pid_alive "$RUN/mysqld.pid" || fail "MariaDB is up but wrote no PID file"

# The slurmdbd account: password generated once, kept in slurmdbd.conf (mode 600) only.
if [ ! -s "$STATE/db.pass" ]; then
    (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$STATE/db.pass")
fi
DB_PASS=$(cat "$STATE/db.pass")
mariadb --no-defaults --socket="$SOCK_DB" -u root >>"$LOG/mysqld.log" 2>&1 <<EOF \
    || fail "could not create the slurm database account"
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
EOF

# ---------------------------------------------------------------------------------------------
# Configuration files.
MEM_MB=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
# A bit below what slurmd measures: more than that would make the node INVALID.
REAL_MEM=$((MEM_MB * 95 / 100))
# `nproc` honours OMP_NUM_THREADS (1 in the test runs): count the processors online instead.
NCPUS=$(getconf _NPROCESSORS_ONLN)
HOST=$(hostname)

cat > "$ETC/slurmdbd.conf" <<EOF
# slurmdbd for the test cluster in $STATE
AuthType=auth/munge
AuthInfo=socket=$SOCK_MUNGE
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$PORT_DBD
SlurmUser=root
DebugLevel=info
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
# TCP on 127.0.0.1 ("localhost" would make the client use the default Unix socket instead).
StorageHost=127.0.0.1
StoragePort=$PORT_DB
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
chmod 600 "$ETC/slurmdbd.conf"   # slurmdbd refuses a config readable by others

cat > "$ETC/gres.conf" <<EOF
# Two fake GPUs so that jobs asking for --gres=gpu:N / --gpus-per-node=N (Dora, submitit) can be
# scheduled. Each GPU needs a device File= that exists (Count= alone leaves the node INVALID);
# jobs asking for them get CUDA_VISIBLE_DEVICES=0,1 but there is no real GPU behind.
AutoDetect=off
NodeName=localhost Name=gpu File=/dev/null
NodeName=localhost Name=gpu File=/dev/zero
EOF

cat > "$ETC/slurm.conf" <<EOF
# Single-node test cluster in $STATE, made by tests/slurm/start.sh.
ClusterName=$CLUSTER
# The machine's hostname is not "localhost": the node is called localhost, slurmd finds itself
# through NodeHostname, and everybody talks to it on 127.0.0.1.
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$PORT_CTLD
SlurmdPort=$PORT_SLURMD
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Private munge socket (used by daemons and by every client command reading this file).
# cred_expire: job credential lifetime (default 120 s, minimum 5); a requeued job only becomes
# eligible again cred_expire + 1 s after the requeue (Reason=BeginTime), so keep it short.
AuthInfo=socket=$SOCK_MUNGE,cred_expire=10

StateSaveLocation=$SPOOL_CTLD
SlurmdSpoolDir=$SPOOL_D
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true

# No cgroups (no systemd here, maybe no cgroup v2 delegation): plain process tracking.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SwitchType=switch/none

# CPUs are the consumable resource; memory is only checked against RealMemory (with
# CR_*_Memory, a job without --mem would take the whole node's memory and serialise all jobs).
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
GresTypes=gpu

# Accounting through slurmdbd, so that sacct (and thus submitit/Dora job states) answers.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$PORT_DBD
# For accounting_storage/slurmdbd this is the munge socket to authenticate with.
AccountingStoragePass=$SOCK_MUNGE
AccountingStorageTRES=gres/gpu
JobCompType=jobcomp/none

# A node that was DOWN comes back by itself when its slurmd registers again.
ReturnToService=2
# Short timers for tests: SIGKILL 5 s after SIGTERM (scancel, requeue, time limit); finished jobs
# leave slurmctld's memory after 60 s (sacct keeps them); fast failure detection.
KillWait=5
MinJobAge=60
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
InactiveLimit=0
Waittime=0
# The periodic scheduler runs every 2 s instead of 60 s, so that a requeued job (which becomes
# eligible only cred_expire + 1 s after the requeue, see AuthInfo) starts again quickly.
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2,sched_min_interval=200000

NodeName=localhost NodeHostname=$HOST NodeAddr=127.0.0.1 CPUs=$NCPUS RealMemory=$REAL_MEM Gres=gpu:2 State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
chmod 644 "$ETC/slurm.conf" "$ETC/gres.conf"

# ---------------------------------------------------------------------------------------------
# slurmdbd, then the cluster record (once), then slurmctld and slurmd.
CURRENT_LOG="$LOG/slurmdbd.log $LOG/slurmdbd.out"
if ! pid_alive "$RUN/slurmdbd.pid"; then
    slurmdbd </dev/null >>"$LOG/slurmdbd.out" 2>&1 || fail "slurmdbd did not start"
fi
wait_until "slurmdbd" "$RUN/slurmdbd.pid" timeout 10 sacctmgr -n -P show cluster format=cluster
if ! timeout 10 sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
    timeout 20 sacctmgr -i add cluster "$CLUSTER" >>"$LOG/slurmdbd.out" 2>&1 \
        || fail "sacctmgr add cluster $CLUSTER failed"
fi

CURRENT_LOG="$LOG/slurmctld.log $LOG/slurmctld.out"
if ! pid_alive "$RUN/slurmctld.pid"; then
    slurmctld </dev/null >>"$LOG/slurmctld.out" 2>&1 || fail "slurmctld did not start"
fi
wait_until "slurmctld" "$RUN/slurmctld.pid" timeout 10 scontrol ping

CURRENT_LOG="$LOG/slurmd.log $LOG/slurmd.out $LOG/slurmctld.log"
if ! pid_alive "$RUN/slurmd.pid"; then
    # -N: the node name of this slurmd (its hostname is not "localhost").
    slurmd -N localhost </dev/null >>"$LOG/slurmd.out" 2>&1 || fail "slurmd did not start"
fi
# Idle (or "mixed"/"allocated" when restarted with jobs), not down/drained/invalid.
node_ready() {
    local st
    st=$(timeout 10 sinfo -h -N -n localhost -o %T) || return 1
    case "$st" in idle|mixed|allocated) return 0;; *) return 1;; esac
}
wait_until "slurmd (node idle in sinfo)" "$RUN/slurmd.pid" node_ready
CURRENT_LOG="$LOG/slurmdbd.log $LOG/slurmctld.log"
wait_until "sacct" "$RUN/slurmdbd.pid" timeout 10 sacct -n -X -a

log "cluster '$CLUSTER' ready (partition '$PARTITION', $NCPUS CPUs, ${REAL_MEM} MB, gpu:2 fake)"
trap - EXIT
print_env
