# shellcheck shell=bash
# Sourced by scripts/demo.sh: the demo's PostgreSQL cluster (for syncd).
#
# A fresh throwaway cluster on every `start` (initdb, trust authentication,
# fsync off), run as the `postgres` user with runuser, listening on
# 127.0.0.1:$PG_PORT only; its Unix socket is in the cluster's directory.
#
# The cluster's directory must belong to postgres, and postgres must be able
# to reach it: build/demo/pg when every parent directory is traversable by
# others (o+x) and the socket path is short enough, otherwise
# /tmp/ngx-session-demo-<hash of the repository path>/pg. The choice is
# recorded in build/demo/pg.dir so that `stop` finds the cluster again.

PG_BIN=${PG_BIN:-$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}

as_postgres() {  # as_postgres COMMAND... (from /, which postgres can enter)
    (cd / && runuser -u postgres -- "$@")
}

pg_dir_choose() {
    local dir=$DEMO/pg
    mkdir -p "$dir"
    chown postgres:postgres "$dir"
    # 107 bytes is the limit for a Unix socket path (.s.PGSQL.NNNNN)
    if (( ${#dir} <= 80 )) && as_postgres test -w "$dir" -a -x "$dir" 2>/dev/null; then
        echo "$dir"
        return
    fi
    rmdir "$dir" 2>/dev/null || true
    dir=/tmp/ngx-session-demo-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)/pg
    mkdir -p "$dir"
    chmod 0755 "$(dirname "$dir")"
    chown postgres:postgres "$dir"
    echo "$dir"
}

pg_dir_recorded() {  # the cluster directory of the last start, or nothing
    [[ -s $DEMO/pg.dir ]] && cat "$DEMO/pg.dir"
    return 0
}

pg_pid() {  # the postmaster's pid while it runs, or nothing
    local dir pid
    dir=$(pg_dir_recorded)
    [[ -n $dir && -r $dir/data/postmaster.pid ]] || return 0
    pid=$(head -n 1 "$dir/data/postmaster.pid")
    if [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] &&
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q postgres; then
        echo "$pid"
    fi
}

start_postgres() {
    [[ -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl ]] || die "PostgreSQL's initdb/pg_ctl not found (PG_BIN=$PG_BIN)"
    id postgres >/dev/null 2>&1 || die "there is no postgres user (install the postgresql package)"
    [[ $(id -u) -eq 0 ]] || die "PostgreSQL runs as the postgres user (runuser): run the demo as root"
    port_free "$PG_PORT" || die "port $PG_PORT is in use (DEMO_PG_PORT=... to choose another)"
    local dir
    dir=$(pg_dir_choose)
    echo "$dir" >"$DEMO/pg.dir"
    rm -rf "${dir:?}/data" "$dir/log"
    as_postgres "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync \
        >"$DEMO/initdb.log" 2>&1 || die "initdb failed (see $DEMO/initdb.log)"
    as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w -s \
        -o "-p $PG_PORT -k '$dir' -c listen_addresses=127.0.0.1 -c fsync=off" start \
        || die "PostgreSQL did not start (see $dir/log)"
    ln -sfn "$dir/log" "$DEMO/postgres.log"
    log "PostgreSQL    127.0.0.1:$PG_PORT (pid $(pg_pid), cluster $dir/data, as postgres)"
}

stop_postgres() {
    local dir pid
    dir=$(pg_dir_recorded)
    pid=$(pg_pid)
    if [[ -n $pid ]]; then
        if ! as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -s stop; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
        log "stopped postgres (pid $pid)"
    fi
}
