#!/usr/bin/env bash
# Make sure the PostgreSQL and Redis that LinkFlow talks to answer; start (and, as root,
# install) them on this machine when they do not.  Idempotent; well under a second when both
# already answer.  One line per service says what was found or done.
#
#   PostgreSQL: LINKFLOW_PG_HOST (127.0.0.1) : LINKFLOW_PG_PORT (5432), user LINKFLOW_PG_USER
#               (postgres), password LINKFLOW_PG_PASSWORD (empty: trust auth expected)
#   Redis:      host and port from LINKFLOW_REDIS_URL (redis://127.0.0.1:6379/0)
#
# Alternative to local services: `docker compose up -d postgres redis`.
set -euo pipefail

PG_HOST=${LINKFLOW_PG_HOST:-127.0.0.1}
PG_PORT=${LINKFLOW_PG_PORT:-5432}
PG_USER=${LINKFLOW_PG_USER:-postgres}
PG_PASSWORD=${LINKFLOW_PG_PASSWORD:-}
REDIS_URL=${LINKFLOW_REDIS_URL:-redis://127.0.0.1:6379/0}
DEADLINE_S=${ENSURE_SERVICES_TIMEOUT:-30}
# shellcheck disable=SC2016 # literal backticks in a message
ALT='or run `docker compose up -d postgres redis`'

export DEBIAN_FRONTEND=noninteractive
export PGCONNECT_TIMEOUT=5

say() { printf '%s\n' "$*"; }
die() {
    printf 'ensure-services: %s\n' "$*" >&2
    exit 1
}
is_root() { [ "$(id -u)" -eq 0 ]; }
is_local() {
    case "$1" in
    127.* | localhost | ::1 | '[::1]') return 0 ;;
    *) return 1 ;;
    esac
}

APT_UPDATED=0
# apt_install PKG... : install Debian packages as root, or say what to run and fail.
apt_install() {
    if ! is_root; then
        die "missing $*: run as root: apt-get update && apt-get install -y $* ($ALT)"
    fi
    command -v apt-get >/dev/null 2>&1 || die "missing $* and no apt-get here ($ALT)"
    local log
    log=$(mktemp)
    if [ "$APT_UPDATED" -eq 0 ]; then
        apt-get update -q >"$log" 2>&1 || {
            cat "$log" >&2
            rm -f "$log"
            die "apt-get update failed"
        }
        APT_UPDATED=1
    fi
    apt-get install -y -q --no-install-recommends "$@" </dev/null >"$log" 2>&1 || {
        cat "$log" >&2
        rm -f "$log"
        die "apt-get install $* failed ($ALT)"
    }
    rm -f "$log"
}

# wait_for COMMAND... : poll COMMAND until it succeeds or the deadline passes.
wait_for() {
    local end=$((SECONDS + DEADLINE_S))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$end" ]; then
            return 1
        fi
        sleep 0.2
    done
    return 0
}

# ---------------------------------------------------------------------------- PostgreSQL

pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2; }

PG_AUTH_ERR=''
pg_auth_ok() {
    # -w: never prompt for a password (CI has no stdin).
    if PG_AUTH_ERR=$(PGPASSWORD=$PG_PASSWORD psql -w -X -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" \
        -d postgres -Atqc 'select 1' 2>&1 </dev/null); then
        return 0
    fi
    return 1
}

# Local cluster ("VER NAME") that serves PG_PORT, else the first one; empty when none.
pg_cluster() {
    command -v pg_lsclusters >/dev/null 2>&1 || return 0
    local all
    all=$(pg_lsclusters -h 2>/dev/null || true)
    [ -n "$all" ] || return 0
    local hit
    hit=$(awk -v p="$PG_PORT" '$3 == p { print $1, $2; exit }' <<<"$all")
    if [ -z "$hit" ]; then
        hit=$(awk 'NR == 1 { print $1, $2 }' <<<"$all")
    fi
    printf '%s\n' "$hit"
}

pg_server_installed() { compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; }

pg_fix_hba() { # VER NAME
    local hba="/etc/postgresql/$1/$2/pg_hba.conf"
    [ -f "$hba" ] || die "PostgreSQL refuses $PG_USER@$PG_HOST:$PG_PORT and $hba is missing: $PG_AUTH_ERR"
    if ! is_root && [ ! -w "$hba" ]; then
        die "PostgreSQL refuses $PG_USER without a password ($PG_AUTH_ERR). As root, put
  host all all 127.0.0.1/32 trust
  host all all ::1/128 trust
at the top of $hba, then: pg_ctlcluster --skip-systemctl-redirect $1 $2 reload ($ALT)"
    fi
    local marker='# added by linkflow scripts/ensure-services.sh'
    if ! grep -qF "$marker" "$hba"; then
        local tmp
        tmp=$(mktemp)
        {
            printf '%s: local TCP without a password\n' "$marker"
            printf 'host all all 127.0.0.1/32 trust\n'
            printf 'host all all ::1/128 trust\n'
            cat "$hba"
        } >"$tmp"
        cat "$tmp" >"$hba" # keeps the file's owner and mode
        rm -f "$tmp"
    fi
    pg_ctlcluster --skip-systemctl-redirect "$1" "$2" reload >/dev/null 2>&1 || true
}

ensure_postgres() {
    local did=''
    if ! command -v pg_isready >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1; then
        if is_local "$PG_HOST"; then apt_install postgresql; else apt_install postgresql-client; fi
        did='installed postgresql; '
    fi

    if ! pg_ready; then
        if ! is_local "$PG_HOST"; then
            wait_for pg_ready ||
                die "PostgreSQL at $PG_HOST:$PG_PORT did not answer within ${DEADLINE_S}s (not local: not started here; $ALT)"
            did+='waited for it; '
        else
            if ! pg_server_installed; then
                apt_install postgresql
                did+='installed postgresql; '
            fi
            local cl
            cl=$(pg_cluster)
            if [ -z "$cl" ]; then
                # Server installed but no cluster (e.g. create_main_cluster = false).
                local ver
                ver=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -1)
                is_root || die "no PostgreSQL cluster; as root run: pg_createcluster $ver main -p $PG_PORT ($ALT)"
                pg_createcluster "$ver" main -p "$PG_PORT" >/dev/null 2>&1 ||
                    die "pg_createcluster $ver main failed ($ALT)"
                did+="created cluster $ver/main; "
                cl=$(pg_cluster)
            fi
            # shellcheck disable=SC2086 # "VER NAME" splits on purpose
            set -- $cl
            local out
            if ! out=$(pg_ctlcluster --skip-systemctl-redirect "$1" "$2" start 2>&1 </dev/null); then
                case "$out" in
                *already\ running*) ;;
                *)
                    is_root || die "could not start cluster $1/$2 ($out); as root run: pg_ctlcluster --skip-systemctl-redirect $1 $2 start ($ALT)"
                    printf '%s\n' "$out" >&2
                    ;;
                esac
            fi
            did+="started cluster $1/$2; "
            wait_for pg_ready ||
                die "PostgreSQL at $PG_HOST:$PG_PORT did not answer within ${DEADLINE_S}s after starting cluster $1/$2 (see /var/log/postgresql/postgresql-$1-$2.log; $ALT)"
        fi
    fi

    if ! pg_auth_ok; then
        # Right after a start, the server may still be coming up: give it a moment.
        case "$PG_AUTH_ERR" in
        *"starting up"* | *"shutting down"*) wait_for pg_auth_ok || true ;;
        esac
    fi
    if ! pg_auth_ok; then
        case "$PG_AUTH_ERR" in
        *authentication* | *password* | *pg_hba.conf*)
            local cl
            cl=$(pg_cluster)
            if ! is_local "$PG_HOST" || [ -z "$cl" ]; then
                die "PostgreSQL at $PG_HOST:$PG_PORT refuses $PG_USER: $PG_AUTH_ERR ($ALT)"
            fi
            # shellcheck disable=SC2086
            set -- $cl
            pg_fix_hba "$1" "$2"
            did+="set trust auth for 127.0.0.1 and ::1 in $1/$2 pg_hba.conf; "
            wait_for pg_auth_ok ||
                die "PostgreSQL still refuses $PG_USER after the pg_hba.conf change: $PG_AUTH_ERR ($ALT)"
            ;;
        *)
            die "PostgreSQL at $PG_HOST:$PG_PORT answers but 'select 1' as $PG_USER failed: $PG_AUTH_ERR ($ALT)"
            ;;
        esac
    fi
    say "postgres: ${did}answering at $PG_HOST:$PG_PORT, user $PG_USER can connect"
}

# ---------------------------------------------------------------------------------- Redis

# redis[s]://[user:password@]host[:port][/db]  ->  REDIS_HOST, REDIS_PORT (+ REDISCLI_AUTH)
parse_redis_url() {
    local rest=${REDIS_URL#*://}
    rest=${rest%%/*}
    rest=${rest%%\?*}
    if [[ $rest == *@* ]]; then
        local userinfo=${rest%@*}
        rest=${rest##*@}
        if [[ $userinfo == *:* ]] && [ -n "${userinfo#*:}" ]; then
            export REDISCLI_AUTH=${userinfo#*:}
        fi
    fi
    if [[ $rest == \[* ]]; then # [ipv6]:port
        REDIS_HOST=${rest%%]*}
        REDIS_HOST=${REDIS_HOST#\[}
        rest=${rest#*]}
        REDIS_PORT=${rest#:}
    elif [[ $rest == *:* ]]; then
        REDIS_HOST=${rest%:*}
        REDIS_PORT=${rest##*:}
    else
        REDIS_HOST=$rest
        REDIS_PORT=''
    fi
    REDIS_HOST=${REDIS_HOST:-127.0.0.1}
    REDIS_PORT=${REDIS_PORT:-6379}
    [[ $REDIS_PORT =~ ^[0-9]+$ ]] || die "cannot parse a port from LINKFLOW_REDIS_URL=$REDIS_URL"
}

redis_ping() {
    local out
    out=$(timeout 3 redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null </dev/null) || return 1
    [ "$out" = PONG ]
}

ensure_redis() {
    parse_redis_url
    local did=''
    # The test suite starts its own private redis-server: the binary must exist either way.
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        apt_install redis-server
        did='installed redis-server; '
    fi
    if ! redis_ping; then
        if ! is_local "$REDIS_HOST"; then
            wait_for redis_ping ||
                die "Redis at $REDIS_HOST:$REDIS_PORT did not answer within ${DEADLINE_S}s (not local: not started here; $ALT)"
            did+='waited for it; '
        else
            local bind=127.0.0.1
            case "$REDIS_HOST" in ::1) bind=::1 ;; esac
            local log="${TMPDIR:-/tmp}/linkflow-redis-$REDIS_PORT.log"
            redis-server --daemonize yes --bind "$bind" --port "$REDIS_PORT" \
                --save '' --appendonly no --logfile "$log" </dev/null >/dev/null ||
                die "redis-server failed to start on $bind:$REDIS_PORT (see $log; $ALT)"
            did+="started redis-server on $bind:$REDIS_PORT (log $log); "
            wait_for redis_ping ||
                die "Redis at $REDIS_HOST:$REDIS_PORT did not answer within ${DEADLINE_S}s (see $log; $ALT)"
        fi
    fi
    say "redis: ${did}answering at $REDIS_HOST:$REDIS_PORT (redis-server $(redis-server --version | sed -n "s/.*v=\([^ ]*\).*/\1/p") binary present)"
}

ensure_postgres
ensure_redis
