#!/usr/bin/env bash
# PostgreSQL for wasmq's shared backend: installs the server binaries. Throwaway clusters are
# started by the tests themselves, and by hand with `cargo run -p wasmq-testkit --bin wasmq-pg`
# (both through wasmq_testkit::postgres).
#
#   scripts/postgres.sh install             install Debian's postgresql package if initdb is
#                                           missing (no default cluster is created)
#   scripts/postgres.sh bindir              print the directory holding initdb and pg_ctl
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

case "${1:-}" in
    install) install ;;
    bindir) bindir || die "initdb not found; run: scripts/postgres.sh install" ;;
    *) sed -n '2,9p' "$0" >&2; exit 2 ;;
esac
