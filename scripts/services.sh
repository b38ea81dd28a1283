#!/usr/bin/env bash
# Install, start, stop and inspect the real services CEEMS tests and demos use, without systemd.
#
#   scripts/services.sh install NAME...   install the Debian packages NAME needs, if missing
#   scripts/services.sh start NAME...     install if needed, start on loopback, wait until ready
#   scripts/services.sh stop NAME...      stop by recorded PID (SIGTERM, then SIGKILL after 15 s)
#   scripts/services.sh status NAME...    print "NAME running PID PORT" or "NAME stopped"
#
# NAME: prometheus (also provides promtool).
# Environment:
#   CEEMS_SERVICES_DIR  state directory: pids, logs, data (default /var/tmp/ceems-services)
#   PROMETHEUS_PORT     loopback port (default 9090)
#   PROMETHEUS_CONFIG   prometheus.yml to use (default: one that scrapes Prometheus itself)
#   PROMETHEUS_ARGS     extra prometheus flags, e.g. "--storage.tsdb.min-block-duration=5m"
# Daemons run in the foreground under setsid so they outlive this script but not the session.
set -euo pipefail

STATE=${CEEMS_SERVICES_DIR:-/var/tmp/ceems-services}

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
  command -v prometheus >/dev/null && command -v promtool >/dev/null || apt_install prometheus
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

known() { case $1 in prometheus) return 0 ;; *) return 1 ;; esac; }

[ $# -ge 2 ] || die "usage: $0 install|start|stop|status NAME... (NAME: prometheus)"
action=$1; shift
for name in "$@"; do known "$name" || die "unknown service '$name' (known: prometheus)"; done
rc=0
for name in "$@"; do
  case $action in
    install) "install_$name" ;;
    start) "start_$name" ;;
    stop) stop_service "$name" ;;
    status) status_service "$name" || rc=$? ;;
    *) die "unknown action '$action' (install|start|stop|status)" ;;
  esac
done
exit $rc
