#!/usr/bin/env bash
# PostgreSQL for wasmq's shared backend: installs the server, and starts or stops throwaway
# clusters (for developers, and for tests that run several hosts against one database).
#
#   scripts/postgres.sh install             install Debian's postgresql package if initdb is
#                                           missing (no default cluster is created)
#   scripts/postgres.sh bindir              print the directory holding initdb and pg_ctl
#   scripts/postgres.sh start [DIR] [PORT]  initdb into DIR (default: a new temporary
#                                           directory) and start a server on 127.0.0.1:PORT
#                                           (default: a free port); prints its URL on stdout
#   scripts/postgres.sh stop DIR            stop that server and delete DIR
#
# PostgreSQL refuses to run as root: as root, the cluster is created and run as the
# `postgres` user (created by the package), with DIR owned by it. Authentication is `trust`
# on 127.0.0.1 and a Unix socket in DIR: for tests and development only.
#
# WASMQ_PG_BINDIR overrides where initdb and pg_ctl are looked for.
set -euo pipefail

die() {
    echo "postgres.sh: $*" >&2
    exit 1
}

# Prints the directory of initdb and pg_ctl, or fails.
bindir() {
    if [[ -n "${WASMQ_PG_BINDIR:-}" ]]; then
        [[ -x "$WASMQ_PG_BINDIR/initdb" ]] || die "WASMQ_PG_BINDIR=$WASMQ_PG_BINDIR has no initdb"
        echo "$WASMQ_PG_BINDIR"
        return
    fi
    local found
    if found="$(command -v initdb 2>/dev/null)" && [[ -x "$(dirname "$found")/pg_ctl" ]]; then
        dirname "$found"
        return
    fi
    found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "$found" && -x "$found/initdb" ]]; then
        echo "$found"
        return
    fi
    return 1
}

install() {
    if dir="$(bindir)"; then
        echo "PostgreSQL server binaries: $dir" >&2
        return
    fi
    [[ "$(id -u)" == 0 ]] || die "initdb not found; install PostgreSQL (Debian: apt-get install postgresql) as root"
    command -v apt-get >/dev/null || die "initdb not found and apt-get is missing; install PostgreSQL by hand"
    echo "installing PostgreSQL from Debian's packages" >&2
    # Only the binaries are wanted: no default cluster listening on port 5432.
    mkdir -p /etc/postgresql-common
    if [[ ! -e /etc/postgresql-common/createcluster.conf ]]; then
        echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
    fi
    # Keep that file as it is, without asking (it is managed by ucf).
    export DEBIAN_FRONTEND=noninteractive UCF_FORCE_CONFFOLD=1
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        postgresql >/dev/null
    dir="$(bindir)" || die "postgresql was installed but initdb is still missing"
    echo "PostgreSQL server binaries: $dir" >&2
}

# Runs a server binary as the postgres user when we are root.
as_owner() {
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    local port
    for _ in $(seq 1 50); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "no free port found"
}

start() {
    local bin dir port
    bin="$(bindir)" || die "initdb not found; run: scripts/postgres.sh install"
    dir="${1:-$(mktemp -d /tmp/wasmq-pg.XXXXXX)}"
    port="${2:-$(free_port)}"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    [[ -e "$dir/data" ]] && die "$dir/data exists already; stop that cluster or choose another DIR"
    if [[ "$(id -u)" == 0 ]]; then
        chown postgres:postgres "$dir"
    fi
    as_owner "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null ||
        { cat "$dir/server.log" >&2; die "the server did not start"; }
    echo "PostgreSQL is running in $dir; stop it with: $0 stop $dir" >&2
    echo "postgres://postgres@127.0.0.1:$port/postgres"
}

stop() {
    local bin dir="${1:?usage: postgres.sh stop DIR}"
    bin="$(bindir)" || die "initdb not found"
    [[ -d "$dir/data" ]] || die "$dir holds no cluster"
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    rm -rf "$dir"
}

case "${1:-}" in
    install) install ;;
    bindir) bindir || die "initdb not found; run: scripts/postgres.sh install" ;;
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    *) sed -n '2,17p' "$0" >&2; exit 2 ;;
esac
