#!/usr/bin/env bash
# Install, start, stop and inspect the real services CEEMS tests and demos use, without systemd.
#
#   scripts/services.sh install NAME...   install the Debian packages NAME needs, if missing
#   scripts/services.sh start NAME...     install if needed, start on loopback, wait until ready
#   scripts/services.sh stop NAME...      stop by recorded PID (SIGTERM, then SIGKILL after 15 s)
#   scripts/services.sh status NAME...    print "NAME running PID PORT" or "NAME stopped"
#
# NAME: prometheus (also provides promtool); victoria-metrics (single-node, a second TSDB
# backend for ceems_lb); slurm (a single-node cluster "testcluster": munged,
# mariadbd, slurmdbd, slurmctld, slurmd, slurmrestd; users alice, bob, carol; see docs/services.md);
# postgresql (one server, role and database "ceems"; its SQLAlchemy URL in postgresql/url).
# Environment:
#   CEEMS_SERVICES_DIR  state directory: pids, logs, data (default /var/tmp/ceems-services)
#   PROMETHEUS_PORT     loopback port (default 9090)
#   PROMETHEUS_CONFIG   prometheus.yml to use (default: one that scrapes Prometheus itself)
#   PROMETHEUS_ARGS     extra prometheus flags, e.g. "--storage.tsdb.min-block-duration=5m"
#   VICTORIA_METRICS_PORT  loopback port (default 8428)
#   VICTORIA_METRICS_ARGS  extra victoria-metrics flags
#   SLURMRESTD_PORT     slurmrestd loopback port (default 6820)
#   SLURM_DB_PORT       MariaDB loopback port for slurmdbd (default 3306)
#   SLURM_CGROUPS       1 (default): proctrack/task/jobacct_gather cgroup plugins; 0: none
#   POSTGRES_PORT       PostgreSQL loopback port (default 5432)
#   POSTGRES_ARGS       extra postgres flags, e.g. "-c fsync=off"
# Daemons run in the foreground under setsid so they outlive this script but not the session.
# shellcheck disable=SC2317  # start_NAME, stop_NAME... are called as "start_$name"
set -euo pipefail

STATE=${CEEMS_SERVICES_DIR:-/var/tmp/ceems-services}
PATH=$PATH:/usr/sbin:/sbin

die() { echo "services.sh: $*" >&2; exit 1; }

apt_install() { # apt_install PACKAGE...  (no daemons start: policy-rc.d or no systemd)
  [ "$(id -u)" = 0 ] || die "installing $* needs root (or install them yourself: apt-get install $*)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

is_running() { # is_running PID -> 0 if alive and not a zombie (PID 1 here reaps orphans late)
  local pid=$1 state
  [ -r "/proc/$pid/stat" ] || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

wait_http() { # wait_http URL SECONDS PIDFILE
  local url=$1 limit=$2 pid
  pid=$(cat "$3")
  local end=$(( $(date +%s) + limit ))
  until curl -sf -o /dev/null "$url"; do
    is_running "$pid" || return 1
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 0.1
  done
}

install_prometheus() {
  if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then apt_install prometheus; fi
}

start_prometheus() {
  install_prometheus
  local dir=$STATE/prometheus port=${PROMETHEUS_PORT:-9090}
  mkdir -p "$dir/data"
  if [ -f "$dir/pid" ] && is_running "$(cat "$dir/pid")"; then
    echo "prometheus already running (pid $(cat "$dir/pid"))"; return 0
  fi
  local config=${PROMETHEUS_CONFIG:-}
  if [ -z "$config" ]; then
    config=$dir/prometheus.yml
    cat >"$config" <<YML
global: {scrape_interval: 5s, evaluation_interval: 5s}
scrape_configs:
  - job_name: prometheus
    static_configs: [{targets: ['127.0.0.1:$port']}]
YML
  fi
  promtool check config "$config" >/dev/null || die "invalid Prometheus config $config"
  # shellcheck disable=SC2086  # PROMETHEUS_ARGS is a list of flags
  setsid prometheus --config.file="$config" --storage.tsdb.path="$dir/data" \
    --storage.tsdb.retention.time=100y --web.listen-address="127.0.0.1:$port" \
    --web.enable-remote-write-receiver --web.enable-admin-api --web.enable-lifecycle \
    ${PROMETHEUS_ARGS:-} >"$dir/prometheus.log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
  echo "$port" >"$dir/port"
  wait_http "http://127.0.0.1:$port/-/ready" 60 "$dir/pid" \
    || { tail -n 20 "$dir/prometheus.log" >&2; die "prometheus did not become ready on port $port"; }
  echo "prometheus running (pid $(cat "$dir/pid"), http://127.0.0.1:$port)"
}

stop_service() { # stop_service NAME
  local dir=$STATE/$1 pid
  [ -f "$dir/pid" ] || { echo "$1 stopped"; return 0; }
  pid=$(cat "$dir/pid")
  if is_running "$pid"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do is_running "$pid" || break; sleep 0.1; done
    if is_running "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$dir/pid"
  echo "$1 stopped"
}

status_service() { # status_service NAME
  local dir=$STATE/$1
  if [ -f "$dir/pid" ] && is_running "$(cat "$dir/pid")"; then
    echo "$1 running $(cat "$dir/pid") $(cat "$dir/port" 2>/dev/null || echo -)"
  else
    echo "$1 stopped"; return 3
  fi
}

# ---- slurm: munged, mariadbd, slurmdbd, slurmctld, slurmd, slurmrestd on one node ----------
SLURM_PACKAGES=(slurm-wlm slurmdbd slurmrestd slurm-client slurm-wlm-jwt-plugin munge mariadb-server)
SLURM_DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd slurmrestd) # start order
SLURM_DIR=$STATE/slurm
SLURM_MARK="# written by ceems scripts/services.sh"
SLURM_CGROUP_CONTROLLERS=(cpuset cpuacct cpu freezer devices pids blkio memory)

install_slurm() {
  local cmd missing=0
  for cmd in munged mariadbd mariadb-install-db slurmdbd slurmctld slurmd slurmrestd sbatch sacctmgr; do
    command -v "$cmd" >/dev/null || missing=1
  done
  # auth/jwt lives in its own package; without it slurmdbd dies "cannot find auth plugin for auth/jwt"
  compgen -G '/usr/lib/*/slurm-wlm/auth_jwt.so' >/dev/null || missing=1
  [ "$missing" = 0 ] || apt_install "${SLURM_PACKAGES[@]}"
}

slurm_pid() { cat "$SLURM_DIR/pids/$1.pid" 2>/dev/null || echo 0; }
slurm_alive() { is_running "$(slurm_pid "$1")"; }
slurm_ms() { echo $(( ($(date +%s%N) - SLURM_T0) / 1000000 )); }

slurm_fail() { # slurm_fail MESSAGE DAEMON  (prints that daemon's log tails, then exits 1)
  local f
  for f in "$SLURM_DIR/log/$2".*; do
    [ -s "$f" ] || continue
    echo "---- tail of $f" >&2
    tail -n 25 "$f" >&2
  done
  die "slurm: $1 (state in $SLURM_DIR; 'scripts/services.sh stop slurm' cleans up)"
}

slurm_wait() { # slurm_wait SECONDS DAEMON WHAT COMMAND...  (fails if DAEMON dies first)
  local limit=$1 daemon=$2 what=$3
  shift 3
  local end=$(( SECONDS + limit ))
  until "$@" >/dev/null 2>&1; do
    slurm_alive "$daemon" || slurm_fail "$daemon exited while waiting for $what" "$daemon"
    [ "$SECONDS" -lt "$end" ] || slurm_fail "timed out after ${limit}s waiting for $what" "$daemon"
    sleep 0.1
  done
  echo "  $what after $(slurm_ms) ms"
}

slurm_daemon() { # slurm_daemon NAME COMMAND...  (foreground daemon, detached, PID recorded)
  local name=$1
  shift
  setsid "$@" >"$SLURM_DIR/log/$name.out" 2>&1 </dev/null &
  echo $! >"$SLURM_DIR/pids/$name.pid"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

slurm_node_ready() { # the node answers: idle (or running jobs left from a previous start)
  sinfo -h -n "$1" -o %t | grep -qxE 'idle|mix|alloc'
}

slurm_restd_ready() {
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/openapi")" != 000 ]
}

slurm_write_config() { # slurm_write_config NODE DB_PORT
  local node=$1 db_port=$2 f proctrack=proctrack/linuxproc task=task/none gather=jobacct_gather/linux
  mkdir -p /etc/slurm
  for f in slurm.conf slurmdbd.conf cgroup.conf; do
    if [ -s "/etc/slurm/$f" ] && ! grep -qF "$SLURM_MARK" "/etc/slurm/$f"; then
      die "/etc/slurm/$f was not written by this script; move it away to run the test cluster"
    fi
  done
  [ -s /etc/slurm/jwt_hs256.key ] || dd if=/dev/urandom of=/etc/slurm/jwt_hs256.key bs=32 count=1 status=none
  chown slurm:slurm /etc/slurm/jwt_hs256.key
  chmod 0600 /etc/slurm/jwt_hs256.key
  if [ "${SLURM_CGROUPS:-1}" = 1 ]; then
    proctrack=proctrack/cgroup task=task/cgroup gather=jobacct_gather/cgroup
  fi
  cat >/etc/slurm/slurm.conf <<CONF
$SLURM_MARK (state in $SLURM_DIR)
ClusterName=testcluster
SlurmctldHost=$node(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=/etc/slurm/jwt_hs256.key
StateSaveLocation=$SLURM_DIR/ctld
SlurmdSpoolDir=$SLURM_DIR/d
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
ProctrackType=$proctrack
TaskPlugin=$task
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without a default every job gets the node's whole RealMemory and jobs run one at a time
DefMemPerCPU=256
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
AccountingStorageEnforce=associations
JobAcctGatherType=$gather
JobAcctGatherFrequency=5
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=30
MinJobAge=300
KillWait=5
NodeName=$node NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
PartitionName=batch Nodes=$node Default=NO MaxTime=INFINITE State=UP
CONF
  cat >/etc/slurm/slurmdbd.conf <<CONF
$SLURM_MARK (state in $SLURM_DIR)
AuthType=auth/munge
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=/etc/slurm/jwt_hs256.key
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=slurm
LogFile=$SLURM_DIR/log/slurmdbd.log
PidFile=/run/slurm/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
CONF
  chown slurm:slurm /etc/slurm/slurmdbd.conf
  chmod 0600 /etc/slurm/slurmdbd.conf
  rm -f "$SLURM_DIR/cgroup_mountpoint"
  if [ "${SLURM_CGROUPS:-1}" != 1 ]; then
    rm -f /etc/slurm/cgroup.conf
  elif [ -e /sys/fs/cgroup/cgroup.controllers ]; then
    # pure cgroup v2 host: untested (the project's machines are hybrid v1)
    printf '%s\nCgroupPlugin=cgroup/v2\nIgnoreSystemd=yes\nConstrainCores=yes\nConstrainRAMSpace=yes\n' \
      "$SLURM_MARK" >/etc/slurm/cgroup.conf
    echo /sys/fs/cgroup >"$SLURM_DIR/cgroup_mountpoint"
  else
    slurm_cgroup_mount
    printf '%s\nCgroupPlugin=cgroup/v1\nCgroupMountpoint=%s\nCgroupAutomount=no\nConstrainCores=yes\nConstrainRAMSpace=yes\nConstrainDevices=no\n' \
      "$SLURM_MARK" "$SLURM_DIR/cgroup" >/etc/slurm/cgroup.conf
    echo "$SLURM_DIR/cgroup" >"$SLURM_DIR/cgroup_mountpoint"
  fi
}

slurm_cgroup_mount() {
  # Hybrid v1 host: bind every v1 controller under $SLURM_DIR/cgroup. memory is bound from our own
  # memory cgroup (/proc/self/cgroup), so job memory stays inside the container's cgroup.
  local cg=$SLURM_DIR/cgroup c src mymem
  mymem=$(awk -F: '$2 == "memory" {print $3}' /proc/self/cgroup)
  [ "$mymem" = / ] && mymem=
  for c in "${SLURM_CGROUP_CONTROLLERS[@]}"; do
    [ -d "/sys/fs/cgroup/$c" ] || continue
    mkdir -p "$cg/$c"
    mountpoint -q "$cg/$c" && continue
    src=/sys/fs/cgroup/$c
    [ "$c" = memory ] && src=/sys/fs/cgroup/memory$mymem
    mount --bind "$src" "$cg/$c" || die "slurm: mount --bind $src $cg/$c failed"
  done
}

slurm_cgroup_cleanup() { # kill what is left in job cgroups, remove empty slurm* cgroups, unmount
  local cg=$SLURM_DIR/cgroup m pids pid
  [ -d "$cg" ] || return 0
  pids=$(find "$cg" -mindepth 3 -path "$cg/*/slurm*" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -un)
  if [ -n "$pids" ]; then
    echo "  killing processes left in job cgroups: $(echo "$pids" | tr '\n' ' ')"
    for pid in $pids; do kill -9 "$pid" 2>/dev/null || true; done
    for _ in $(seq 1 50); do
      [ -z "$(find "$cg" -mindepth 3 -path "$cg/*/slurm*" -name cgroup.procs -exec cat {} + 2>/dev/null)" ] && break
      sleep 0.1
    done
  fi
  find "$cg" -mindepth 2 -maxdepth 2 -type d -name 'slurm*' -print0 2>/dev/null \
    | while IFS= read -r -d '' m; do find "$m" -depth -type d -exec rmdir {} + 2>/dev/null || true; done
  for m in "$cg"/*; do
    if mountpoint -q "$m"; then umount "$m" || echo "services.sh: could not unmount $m" >&2; fi
  done
}

start_slurm() {
  install_slurm
  [ "$(id -u)" = 0 ] || die "starting slurm needs root"
  local d up=() down=() node db_port=${SLURM_DB_PORT:-3306} port=${SLURMRESTD_PORT:-6820} p
  for d in "${SLURM_DAEMONS[@]}"; do
    if slurm_alive "$d"; then up+=("$d"); else down+=("$d"); fi
  done
  if [ ${#down[@]} = 0 ]; then
    echo "slurm already running (slurmctld pid $(slurm_pid slurmctld), slurmrestd port $(cat "$SLURM_DIR/port"))"
    return 0
  fi
  if [ ${#up[@]} -gt 0 ]; then
    echo "slurm partly running (stopped: ${down[*]}): restarting all"
    stop_slurm >/dev/null
  fi
  for p in 6817 6818 6819 "$db_port" "$port"; do
    port_busy "$p" && die "slurm: 127.0.0.1:$p is already in use (another SLURM or database? stop it first)"
  done
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    die "slurm: a munged not started from $SLURM_DIR is already running"
  fi
  SLURM_T0=$(date +%s%N)
  node=$(hostname -s)
  getent hosts "$node" >/dev/null || die "slurm: host name '$node' does not resolve (add it to /etc/hosts)"
  mkdir -p "$SLURM_DIR"/{pids,log,ctld,d,mysql} /run/slurm /run/munge /run/mysqld
  chmod 0755 "$STATE" "$SLURM_DIR" "$SLURM_DIR/log"
  # slurmrestd refuses to run as root or as SlurmUser: it gets its own user
  id slurmrestd >/dev/null 2>&1 || useradd -r -M -s /usr/sbin/nologin slurmrestd
  for d in alice bob carol; do id "$d" >/dev/null 2>&1 || useradd -m -s /bin/bash "$d"; done
  chown slurm:slurm "$SLURM_DIR"/{ctld,d} /run/slurm
  chown munge:munge /run/munge
  chown mysql:mysql /run/mysqld "$SLURM_DIR/mysql"
  touch "$SLURM_DIR"/log/{slurmctld,slurmd,slurmdbd}.log
  chown slurm:slurm "$SLURM_DIR"/log/slurm*.log
  echo "$port" >"$SLURM_DIR/port"
  slurm_write_config "$node" "$db_port"

  if [ ! -s /etc/munge/munge.key ]; then # the Debian postinst normally creates it
    mungekey --create --force
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
  fi
  slurm_daemon munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged -F
  slurm_wait 10 munged "munged" bash -c 'munge -n | unmunge'

  if [ ! -d "$SLURM_DIR/mysql/data/mysql" ]; then
    mariadb-install-db --user=mysql --datadir="$SLURM_DIR/mysql/data" --auth-root-authentication-method=socket \
      --skip-test-db >"$SLURM_DIR/log/mariadbd.install" 2>&1 \
      || slurm_fail "mariadb-install-db failed" mariadbd
  fi
  slurm_daemon mariadbd mariadbd --no-defaults --user=mysql --datadir="$SLURM_DIR/mysql/data" \
    --socket="$SLURM_DIR/mysql/mysqld.sock" --pid-file="$SLURM_DIR/mysql/mysqld.pid" \
    --bind-address=127.0.0.1 --port="$db_port" --innodb-buffer-pool-size=256M \
    --innodb-log-file-size=64M --innodb-lock-wait-timeout=900 --log-error="$SLURM_DIR/log/mariadbd.err"
  slurm_wait 30 mariadbd "mariadbd" mariadb-admin --socket="$SLURM_DIR/mysql/mysqld.sock" ping
  mariadb --socket="$SLURM_DIR/mysql/mysqld.sock" <<'SQL' || slurm_fail "creating the accounting database failed" mariadbd
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpw';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL

  slurm_daemon slurmdbd /usr/sbin/slurmdbd -D
  slurm_wait 60 slurmdbd "slurmdbd" sacctmgr -n -P list cluster
  local assoc
  assoc=$(sacctmgr -n -P list associations format=cluster,account,user)
  if ! grep -q '^testcluster|' <<<"$assoc"; then
    sacctmgr -i -Q add cluster testcluster >/dev/null || slurm_fail "sacctmgr add cluster failed" slurmdbd
  fi
  if ! grep -q '^testcluster|physics|carol$' <<<"$assoc"; then
    { sacctmgr -i -Q add account research,physics Organization=ceems Description=tests \
      && sacctmgr -i -Q add user alice,bob,root Account=research \
      && sacctmgr -i -Q add user carol Account=physics; } >/dev/null \
      || slurm_fail "sacctmgr could not add accounts and users" slurmdbd
  fi
  echo "  accounts after $(slurm_ms) ms"

  slurm_daemon slurmctld /usr/sbin/slurmctld -D -i
  slurm_wait 60 slurmctld "slurmctld" bash -c 'scontrol ping | grep -q UP'
  slurm_daemon slurmd /usr/sbin/slurmd -D -N "$node"
  slurm_wait 60 slurmd "node $node idle" slurm_node_ready "$node"
  # without SLURM_JWT=daemon every request fails: "Rejecting thread config token"
  slurm_daemon slurmrestd setpriv --reuid=slurmrestd --regid=slurmrestd --init-groups \
    env SLURM_JWT=daemon /usr/sbin/slurmrestd -a rest_auth/jwt \
    -s openapi/v0.0.38,openapi/dbv0.0.38 "127.0.0.1:$port"
  slurm_wait 30 slurmrestd "slurmrestd" slurm_restd_ready "$port"
  slurm_wait 30 slurmdbd "sacctmgr" bash -c 'sacctmgr -n -P list cluster format=cluster | grep -qx testcluster'
  echo "slurm running (cluster testcluster, node $node, slurmrestd http://127.0.0.1:$port," \
    "cgroups $(cat "$SLURM_DIR/cgroup_mountpoint" 2>/dev/null || echo none), ready in $(slurm_ms) ms)"
}

stop_slurm() {
  local d i pid jobs
  if slurm_alive slurmctld; then # let slurm end its jobs, so their cgroups go away cleanly
    jobs=$(squeue -h -o %A 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      # shellcheck disable=SC2086  # one job id per word
      scancel $jobs 2>/dev/null || true
      for _ in $(seq 1 150); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.1; done
    fi
  fi
  for (( i = ${#SLURM_DAEMONS[@]} - 1; i >= 0; i-- )); do
    d=${SLURM_DAEMONS[i]}
    pid=$(slurm_pid "$d")
    if is_running "$pid"; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 150); do is_running "$pid" || break; sleep 0.1; done
      if is_running "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$SLURM_DIR/pids/$d.pid"
  done
  slurm_cgroup_cleanup
  echo "slurm stopped"
}

status_slurm() {
  local d pid state=running down=()
  for d in "${SLURM_DAEMONS[@]}"; do slurm_alive "$d" || down+=("$d"); done
  if [ ${#down[@]} = ${#SLURM_DAEMONS[@]} ]; then
    echo "slurm stopped"
    return 3
  fi
  [ ${#down[@]} = 0 ] || state="degraded (stopped: ${down[*]})"
  echo "slurm $state $(slurm_pid slurmctld) $(cat "$SLURM_DIR/port" 2>/dev/null || echo -)"
  for d in "${SLURM_DAEMONS[@]}"; do
    pid=$(slurm_pid "$d")
    if is_running "$pid"; then echo "  $d $pid"; else echo "  $d stopped"; fi
  done
  echo "  cgroup_mountpoint $(cat "$SLURM_DIR/cgroup_mountpoint" 2>/dev/null || echo -)"
  [ ${#down[@]} = 0 ] || return 3
}

# ---- postgresql: one server with role and database "ceems" ----------------------------------
PG_DIR=$STATE/postgresql

pg_bin() { # the newest installed server's bin directory (Debian: /usr/lib/postgresql/15/bin)
  local dir
  dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] && [ -x "$dir/postgres" ] && echo "$dir"
}

install_postgresql() {
  pg_bin >/dev/null || apt_install postgresql
}

pg_owner() { # the command prefix that runs as postgres when root (postgres refuses root)
  PG_OWNER=()
  if [ "$(id -u)" = 0 ]; then PG_OWNER=(setpriv --reuid=postgres --regid=postgres --init-groups); fi
}

start_postgresql() {
  install_postgresql
  local bin port=${POSTGRES_PORT:-5432} password end
  bin=$(pg_bin) || die "postgresql: no server under /usr/lib/postgresql/*/bin"
  pg_owner
  if [ -f "$PG_DIR/pid" ] && is_running "$(cat "$PG_DIR/pid")"; then
    echo "postgresql already running (pid $(cat "$PG_DIR/pid"), port $(cat "$PG_DIR/port"))"; return 0
  fi
  port_busy "$port" && die "postgresql: 127.0.0.1:$port is already in use"
  mkdir -p "$PG_DIR/run"
  # the server runs as postgres: every directory above its data must be traversable
  chmod 0755 "$STATE" "$PG_DIR"
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$PG_DIR/run"; fi
  if [ ! -s "$PG_DIR/data/PG_VERSION" ]; then
    rm -rf "$PG_DIR/data"
    mkdir -m 0700 "$PG_DIR/data"
    if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$PG_DIR/data"; fi
    # superuser over the socket only (trust); TCP clients need a password
    "${PG_OWNER[@]}" "$bin/initdb" -D "$PG_DIR/data" -U postgres --encoding=UTF8 --no-locale \
      --auth-local=trust --auth-host=scram-sha-256 --no-sync >"$PG_DIR/initdb.log" 2>&1 \
      || { tail -n 20 "$PG_DIR/initdb.log" >&2; die "postgresql: initdb failed"; }
  fi
  # shellcheck disable=SC2086  # POSTGRES_ARGS is a list of flags
  setsid "${PG_OWNER[@]}" "$bin/postgres" -D "$PG_DIR/data" -k "$PG_DIR/run" -h 127.0.0.1 -p "$port" \
    ${POSTGRES_ARGS:-} >"$PG_DIR/postgresql.log" 2>&1 </dev/null &
  echo $! >"$PG_DIR/pid"
  echo "$port" >"$PG_DIR/port"
  end=$(( SECONDS + 60 ))
  until "$bin/pg_isready" -q -h "$PG_DIR/run" -p "$port" -U postgres; do
    is_running "$(cat "$PG_DIR/pid")" || { tail -n 20 "$PG_DIR/postgresql.log" >&2; die "postgresql exited"; }
    [ "$SECONDS" -lt "$end" ] || { tail -n 20 "$PG_DIR/postgresql.log" >&2; die "postgresql not ready after 60 s"; }
    sleep 0.1
  done
  # kept across restarts, so a URL handed out earlier stays valid
  [ -s "$PG_DIR/password" ] || (umask 077; od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$PG_DIR/password")
  password=$(cat "$PG_DIR/password")
  "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_DIR/run" -p "$port" -U postgres -d postgres \
    -v password="$password" >/dev/null <<'SQL' || die "postgresql: could not create role and database ceems"
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ceems') AS missing_role \gset
\if :missing_role
CREATE ROLE ceems LOGIN CREATEDB;
\endif
ALTER ROLE ceems PASSWORD :'password';
SELECT NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'ceems') AS missing_db \gset
\if :missing_db
CREATE DATABASE ceems OWNER ceems;
\endif
SQL
  (umask 077; echo "postgresql+psycopg://ceems:$password@127.0.0.1:$port/ceems" >"$PG_DIR/url")
  echo "postgresql running (pid $(cat "$PG_DIR/pid"), $(basename "$(dirname "$bin")"), 127.0.0.1:$port, url in $PG_DIR/url)"
}

stop_postgresql() {
  local pid
  [ -f "$PG_DIR/pid" ] || { echo "postgresql stopped"; return 0; }
  pid=$(cat "$PG_DIR/pid")
  if is_running "$pid"; then
    # SIGINT is the "fast" shutdown: SIGTERM ("smart") would wait for every client to leave
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do is_running "$pid" || break; sleep 0.1; done
    if is_running "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$PG_DIR/pid"
  echo "postgresql stopped"
}

# ---- victoria-metrics: VictoriaMetrics single-node, a second Prometheus-compatible TSDB ----
install_victoria_metrics() {
  command -v victoria-metrics >/dev/null || apt_install victoria-metrics
}

start_victoria_metrics() {
  install_victoria_metrics
  local dir=$STATE/victoria-metrics port=${VICTORIA_METRICS_PORT:-8428}
  mkdir -p "$dir/data"
  if [ -f "$dir/pid" ] && is_running "$(cat "$dir/pid")"; then
    echo "victoria-metrics already running (pid $(cat "$dir/pid"))"; return 0
  fi
  # -search.latencyOffset=0s: samples are queryable at once, not 30 s later
  # shellcheck disable=SC2086  # VICTORIA_METRICS_ARGS is a list of flags
  setsid victoria-metrics -storageDataPath="$dir/data" -httpListenAddr="127.0.0.1:$port" \
    -retentionPeriod=100y -search.latencyOffset=0s ${VICTORIA_METRICS_ARGS:-} \
    >"$dir/victoria-metrics.log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
  echo "$port" >"$dir/port"
  wait_http "http://127.0.0.1:$port/health" 60 "$dir/pid" \
    || { tail -n 20 "$dir/victoria-metrics.log" >&2; die "victoria-metrics did not become ready on port $port"; }
  echo "victoria-metrics running (pid $(cat "$dir/pid"), http://127.0.0.1:$port)"
}

known() { case $1 in prometheus | victoria-metrics | slurm | postgresql) return 0 ;; *) return 1 ;; esac; }
has() { declare -F "$1" >/dev/null; }

[ $# -ge 2 ] || die "usage: $0 install|start|stop|status NAME... (NAME: prometheus, victoria-metrics, slurm, postgresql)"
action=$1; shift
for name in "$@"; do known "$name" || die "unknown service '$name' (known: prometheus, victoria-metrics, slurm, postgresql)"; done
rc=0
for name in "$@"; do
  case $action in
    install) "install_${name//-/_}" ;;
    start) "start_${name//-/_}" ;;
    stop) if has "stop_${name//-/_}"; then "stop_${name//-/_}"; else stop_service "$name"; fi ;;
    status) if has "status_${name//-/_}"; then "status_${name//-/_}" || rc=$?; else status_service "$name" || rc=$?; fi ;;
    *) die "unknown action '$action' (install|start|stop|status)" ;;
  esac
done
exit $rc
