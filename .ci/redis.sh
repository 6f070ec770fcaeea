#!/usr/bin/env bash
# Throwaway Redis servers for the Redis served log's tests, printing the URL they take.
# Installs Debian's server package if it is missing (its redis-server also runs a
# Sentinel: `redis-server FILE --sentinel`, no other package). Everything listens on
# loopback only, keeps no data on disk (no RDB, no AOF, diskless replication) and writes
# its pids, configs and logs inside DIR, nothing under /var.
#
#   eval "$(.ci/redis.sh start DIR)"
#       one server: FYP_TEST_REDIS_URL
#   eval "$(.ci/redis.sh sentinel DIR [SENTINELS [REPLICAS]])"
#       a master, REPLICAS replicas (1) and SENTINELS Sentinels (3; quorum: a majority)
#       watching service "fyp": FYP_TEST_REDIS_SENTINEL_URL (redis+sentinel://…/fyp/0)
#   .ci/redis.sh stop DIR
#       stop every server started in DIR
#
# The Sentinels' timings are the tests' (a master unreachable for 2 s is down, a
# failover may take 2 s), not production values.
set -euo pipefail
action=$1
dir=$2
sentinels=${3:-3}
replicas=${4:-1}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() { # wait_for PORT COMMAND... until the command's output has the last word
    local port=$1 want=${*: -1}
    local args=("${@:2:$#-2}")
    for _ in $(seq 100); do
        redis-cli -p "$port" "${args[@]}" 2>/dev/null | grep -q "$want" && return 0
        sleep 0.1
    done
    echo "redis on port $port: no '$want' from ${args[*]}" >&2
    return 1
}

sees_replicas() { # sees_replicas PORT: the Sentinel has each replica's INFO (it may promote it)
    for _ in $(seq 100); do
        [ "$(redis-cli -p "$1" sentinel replicas fyp 2>/dev/null | grep -cx ok)" -ge "$replicas" ] &&
            return 0 # master-link-status: ok
        sleep 0.1
    done
    echo "the Sentinel on port $1 does not see $replicas replicas" >&2
    return 1
}

server() { # server PORT [ARGS...]: a data server, daemonized, its files named by its port
    local port=$1
    shift
    redis-server --bind 127.0.0.1 --port "$port" --daemonize yes --dir "$dir" \
        --pidfile "$dir/redis-$port.pid" --logfile "$dir/redis-$port.log" \
        --save '' --appendonly no --repl-diskless-load on-empty-db --repl-diskless-sync-delay 0 \
        --shutdown-timeout 0 --protected-mode yes \
        "$@" >&2
    wait_for "$port" ping PONG
}

case "$action" in
start | sentinel)
    if ! command -v redis-server >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends redis-server >&2
    fi
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    master=$(free_port)
    server "$master"
    if [ "$action" = start ]; then
        echo "export FYP_TEST_REDIS_URL=redis://127.0.0.1:$master/0"
        exit 0
    fi
    for _ in $(seq "$replicas"); do
        replica=$(free_port)
        server "$replica" --replicaof 127.0.0.1 "$master"
        wait_for "$replica" info replication master_link_status:up
    done
    for _ in $(seq 100); do # until each replica has sent its first ACK (WAIT counts it)
        held=$(printf 'SET ci:ready 1\nDEL ci:ready\nWAIT %s 100\n' "$replicas" |
            redis-cli -p "$master" | tail -n 1)
        [ "$held" = "$replicas" ] && break
        sleep 0.1
    done
    hosts=()
    for _ in $(seq "$sentinels"); do
        port=$(free_port)
        cat >"$dir/sentinel-$port.conf" <<EOF
bind 127.0.0.1
port $port
daemonize yes
dir $dir
pidfile $dir/sentinel-$port.pid
logfile $dir/sentinel-$port.log
sentinel monitor fyp 127.0.0.1 $master $((sentinels / 2 + 1))
sentinel down-after-milliseconds fyp 2000
sentinel failover-timeout fyp 2000
EOF
        redis-server "$dir/sentinel-$port.conf" --sentinel >&2
        hosts+=("127.0.0.1:$port")
    done
    for host in "${hosts[@]}"; do # each knows enough of the others, and every replica
        wait_for "${host#*:}" sentinel ckquorum fyp OK
        sees_replicas "${host#*:}"
    done
    echo "export FYP_TEST_REDIS_SENTINEL_URL=redis+sentinel://$(
        IFS=,
        echo "${hosts[*]}"
    )/fyp/0"
    ;;
stop) # the Sentinels first (else they fail over while the servers stop)
    for pidfile in "$dir"/sentinel-*.pid "$dir"/redis-*.pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        port=${pidfile##*-}
        port=${port%.pid}
        # only the server it names (one killed by a test leaves its file; pids are reused)
        if ! { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -q "redis-server .*:$port"; then
            rm -f "$pidfile"
            continue
        fi
        kill "$pid" 2>/dev/null || continue
        for _ in $(seq 50); do # gone when it removed its pid file (not reaped yet, maybe)
            [ -f "$pidfile" ] || break
            sleep 0.05
        done
    done
    ;;
*)
    echo "usage: $0 start|sentinel|stop DIR [SENTINELS]" >&2
    exit 2
    ;;
esac
