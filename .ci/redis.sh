#!/usr/bin/env bash
# Start a throwaway Redis server for the Redis served log's tests and print the URL they
# take (FYP_TEST_REDIS_URL). Installs Debian's server package if it is missing. The
# server listens on loopback only, keeps nothing on disk (no RDB, no AOF) and writes its
# pid, socket and log inside DIR, nothing under /var.
# Usage: eval "$(.ci/redis.sh start DIR)"; .ci/redis.sh stop DIR
set -euo pipefail
action=$1
dir=$2
case "$action" in
start)
    if ! command -v redis-server >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends redis-server >&2
    fi
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    redis-server --bind 127.0.0.1 --port "$port" --daemonize yes --dir "$dir" \
        --pidfile "$dir/redis.pid" --logfile "$dir/server.log" \
        --save '' --appendonly no --protected-mode yes >&2
    for _ in $(seq 50); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    redis-cli -p "$port" ping >/dev/null
    echo "$port" >"$dir/port"
    echo "export FYP_TEST_REDIS_URL=redis://127.0.0.1:$port/0"
    ;;
stop)
    if [ -f "$dir/port" ]; then
        redis-cli -p "$(cat "$dir/port")" shutdown nosave >/dev/null 2>&1 || true
    fi
    if [ -f "$dir/redis.pid" ] && kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null; then
        kill "$(cat "$dir/redis.pid")" || true
    fi
    ;;
esac
