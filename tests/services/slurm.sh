#!/usr/bin/env bash
# A single-node Slurm cluster on loopback for the tests: munged, slurmctld and slurmd as root.
#
#   tests/services/slurm.sh [start]   install (as root, where missing), configure, start; prints
#                                    SLURM_CONF=... for the tests
#   tests/services/slurm.sh stop      stop the three daemons
#
# One node (this host, all its CPUs, no GPUs) in one partition, "debug". State, spool, logs and
# the munge socket live in LEUKTUI_SERVICES_DIR (default /tmp/leuktui-services)/slurm.
# Idempotent: daemons already answering are left running.
set -euo pipefail

ROOT="${LEUKTUI_SERVICES_DIR:-/tmp/leuktui-services}"
DIR="$ROOT/slurm"
CONF="$DIR/slurm.conf"
CTLD_PORT="${LEUKTUI_TEST_SLURMCTLD_PORT:-6817}"
SLURMD_PORT="${LEUKTUI_TEST_SLURMD_PORT:-6818}"
NODE="$(hostname -s)"

say() { echo "slurm.sh: $*" >&2; }

install_if_missing() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sbatch >/dev/null; then
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        say "Slurm is not installed and this is not root: install slurm-wlm and munge"
        exit 1
    fi
    say "installing slurm-wlm and munge (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null; }
}

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null; }

write_conf() {
    local cpus
    cpus="$(nproc)"
    cat > "$CONF.new" <<CONF
ClusterName=leuktui-test
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
# Finished jobs stay visible to squeue and scontrol for 10 minutes, so their end is read back.
MinJobAge=600
# SIGTERM to SIGKILL on scancel and at a time limit: a worker checkpoints in this time.
KillWait=30
SchedulerParameters=sched_interval=2
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
    if [ -f "$CONF" ] && cmp -s "$CONF" "$CONF.new"; then rm "$CONF.new"; else mv "$CONF.new" "$CONF"; fi
}

start() {
    install_if_missing
    if [ "$(id -u)" != 0 ]; then
        say "the test cluster's daemons run as root; run this script as root"
        exit 1
    fi
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/munge"
    chmod 755 "$ROOT" "$DIR"
    write_conf
    export SLURM_CONF="$CONF"
    if ! pid_alive "$DIR/munge/munged.pid"; then
        [ -s "$DIR/munge/munge.key" ] || { dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none; chmod 600 "$DIR/munge/munge.key"; }
        chmod 700 "$DIR/munge"
        munged --force --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" \
            --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed"
        chmod 755 "$DIR/munge"
    fi
    if ! pid_alive "$DIR/slurmctld.pid"; then
        slurmctld -f "$CONF"
    fi
    if ! pid_alive "$DIR/slurmd.pid"; then
        slurmd -f "$CONF"
    fi
    local i
    for i in $(seq 1 60); do
        if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
            echo "SLURM_CONF=$CONF"
            return 0
        fi
        # A node left down by an earlier, unclean stop comes back once asked.
        scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
        sleep 1
    done
    say "the node did not come up; see $DIR/slurmctld.log and $DIR/slurmd.log"
    sinfo >&2 || true
    exit 1
}

stop() {
    local daemon
    for daemon in slurmd slurmctld munge/munged; do
        if pid_alive "$DIR/$daemon.pid"; then
            kill "$(cat "$DIR/$daemon.pid" 2>/dev/null)" 2>/dev/null || true
            for _ in $(seq 1 50); do pid_alive "$DIR/$daemon.pid" || break; sleep 0.2; done
        fi
    done
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    *) say "usage: $0 [start|stop]"; exit 2 ;;
esac
