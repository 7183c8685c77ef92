#!/usr/bin/env bash
# Benchmark of the PostgreSQL store beside the SQLite one, on this machine.
#
#   benches/postgres.sh [RUNS] [RECORD_CALLS] [PIPELINE...]
#
# Starts a private PostgreSQL cluster (Debian's postgresql, run as the `postgres` user on a
# loopback port, fsync on), generates a synthetic fleet of RUNS runs (default 100000), and for
# each store prints side by side:
#   - `import` of the fleet into an empty store: wall time and events per second (on
#     PostgreSQL, new rows go in by binary COPY a batch at a time, run as the cluster's owner,
#     who may COPY into every table; a hook role upserts artifacts and builder records through
#     the batch functions of schema version 3 instead, a little slower);
#   - the same import by a hook role, into a database of its own;
#   - floors under the import: SQLite copying the imported rows into an empty store itself;
#     on PostgreSQL the events alone by one COPY into a table like `events`, every table by
#     COPY into an empty store, and the same rows bare with their indexes built after;
#   - `trace --pipeline P --format json` (time-aware) for each PIPELINE (default p17 and p50,
#     the largest seed of the trace benchmark): the median of 3 runs, the ratio, and whether
#     the two stores' JSON is identical;
#   - `verify-log` over the whole chain (an entry a run): wall time, entries per second, and
#     whether the two stores' chains have the same length and are intact;
#   - RECORD_CALLS (default 100) `record` calls against the imported store, process start
#     included, over TCP for PostgreSQL: median and p95; then as many through PgBouncer in
#     transaction pooling mode, when Debian's `pgbouncer` is installed (a pool keeps the
#     server's processes: each direct call starts one).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/record_latency.sh
runs=${1:-100000}
calls=${2:-100}
shift 2 || true
pipelines=("$@")
[ ${#pipelines[@]} -gt 0 ] || pipelines=(p17 p50)
cargo build --release --quiet
bin=$(pwd)/${CARGO_TARGET_DIR:-target}/release/cachewarden
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
work=$(mktemp -d)
chown postgres: "$work"
# A free port on loopback; waiting until a server answers on one.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
answering() { for _ in $(seq 100); do "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$1" && break; sleep 0.1; done; }
port=$(free_port)
pid=
bouncer_pid=
cleanup() {
    [ -n "$bouncer_pid" ] && kill "$bouncer_pid" 2>/dev/null
    [ -n "$pid" ] && kill "$pid" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

runuser -u postgres -- "$pgbin/initdb" -D "$work/pg" -A trust -U postgres >/dev/null
runuser -u postgres -- "$pgbin/postgres" -D "$work/pg" -p "$port" -k "$work" \
    -c listen_addresses=127.0.0.1 -c shared_buffers=256MB >"$work/pg.log" 2>&1 &
pid=$!
answering "$port"
psql -q "postgresql://postgres@127.0.0.1:$port/postgres" -c "CREATE DATABASE bench"
pg="postgresql://postgres@127.0.0.1:$port/bench"
lite="$work/fleet.db"
"$bin" --db "$pg" db migrate >/dev/null 2>&1

"$bin" bench generate --runs "$runs" -o "$work/fleet.jsonl" 2>"$work/gen.txt"
events=$(grep -o 'about [0-9]*' "$work/gen.txt" | grep -o '[0-9]*')
echo "fleet: $runs runs, about $events events"

seconds() { echo "scale=3; ($2 - $1) / 1000000000" | bc; }

declare -A import_s
for store in sqlite postgres; do
    db=$lite
    [ "$store" = postgres ] && db=$pg
    start=$(date +%s%N)
    "$bin" --db "$db" import "$work/fleet.jsonl" 2>/dev/null
    end=$(date +%s%N)
    import_s[$store]=$(seconds "$start" "$end")
    echo "import, $store: ${import_s[$store]} s = $(echo "$events / ${import_s[$store]}" | bc) events/s"
done
echo "import ratio postgres/sqlite: x$(echo "scale=2; ${import_s[postgres]} / ${import_s[sqlite]}" | bc)"

# The same import by a hook role (`db grant --role hook`) into a database of its own.
psql -q "postgresql://postgres@127.0.0.1:$port/postgres" -c "CREATE DATABASE bench_hook" \
    -c "CREATE ROLE bench_hook LOGIN PASSWORD 'bench-hook'"
"$bin" --db "postgresql://postgres@127.0.0.1:$port/bench_hook" db migrate >/dev/null 2>&1
"$bin" --db "postgresql://postgres@127.0.0.1:$port/bench_hook" db grant bench_hook --role hook \
    >/dev/null 2>&1
start=$(date +%s%N)
"$bin" --db "postgresql://bench_hook:bench-hook@127.0.0.1:$port/bench_hook" import \
    "$work/fleet.jsonl" 2>/dev/null
end=$(date +%s%N)
hook_s=$(seconds "$start" "$end")
echo "import, postgres as the hook role: $hook_s s = $(echo "$events / $hook_s" | bc) events/s (x$(echo "scale=2; $hook_s / ${import_s[postgres]}" | bc) the owner's)"
psql -q "postgresql://postgres@127.0.0.1:$port/postgres" -c "DROP DATABASE bench_hook"

# Floors under the import, each store's own engine writing the rows the import left, with no
# client work at all (no parsing, lookups, checks or ids):
# - sqlite: `bench floor`, every table copied by SQLite into an empty store (INSERT ... SELECT
#   a table, one transaction, the schema's indexes and triggers);
# - postgres, events alone: one binary COPY from a file on the server's machine into an empty
#   table like `events` (its three indexes, no triggers, no foreign key);
# - postgres, every table as the import meets it: one binary COPY a table, parents first, one
#   transaction, into an empty store made by `db migrate` (indexes, foreign keys, triggers);
# - postgres, bare: the same COPYs into tables like the store's with no index, constraint or
#   trigger, then the store's indexes built (pg_restore's order): what the rows and their
#   indexes cost with nothing else, the least any import into this schema could take.
"$bin" bench floor --from "$lite" --into "$work/floor.db" | tail -1
rm -f "$work/floor.db" "$work/floor.db-wal" "$work/floor.db-shm"
floor_tables="pipelines builders runs artifacts artifact_tags mounts builder_records events pipeline_changes run_chain"
others=$(psql -qAt "$pg" -c "SELECT string_agg(relname, ' ') FROM pg_stat_user_tables
    WHERE relname NOT LIKE '%\_pages' AND relname <> 'schema_version'
      AND relname <> ALL (string_to_array('$floor_tables', ' ')) AND n_live_tup > 0")
[ -z "$others" ] || echo "note: the floors leave out tables holding rows: $others"
for t in $floor_tables; do
    psql -q "$pg" -c "\\copy (SELECT * FROM $t ORDER BY 1) TO '$work/$t.copy' BINARY"
done
floor_file="$work/events.copy"
psql -q "$pg" -c "CREATE TABLE floor_events (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)"
start=$(date +%s%N)
psql -q "$pg" -c "\\copy floor_events FROM '$floor_file' BINARY"
end=$(date +%s%N)
stored=$(psql -qAt "$pg" -c "SELECT count(*) FROM floor_events")
psql -q "$pg" -c "DROP TABLE floor_events"
floor_s=$(seconds "$start" "$end")
echo "floor, postgres: COPY of the $stored events alone into a table like events: $floor_s s = $(echo "$stored / $floor_s" | bc) events/s"

psql -q "postgresql://postgres@127.0.0.1:$port/postgres" -c "CREATE DATABASE bench_floor"
floor_db="postgresql://postgres@127.0.0.1:$port/bench_floor"
"$bin" --db "$floor_db" db migrate >/dev/null 2>&1
for t in $floor_tables; do echo "\\copy $t FROM '$work/$t.copy' BINARY"; done >"$work/floor.sql"
start=$(date +%s%N)
psql -q -1 "$floor_db" -f "$work/floor.sql"
end=$(date +%s%N)
store_floor_s=$(seconds "$start" "$end")
echo "floor, postgres: every table by COPY into an empty store (indexes, foreign keys, triggers): $store_floor_s s = $(echo "$stored / $store_floor_s" | bc) events/s"
{
    echo "CREATE SCHEMA bare;"
    for t in $floor_tables; do echo "CREATE TABLE bare.$t (LIKE public.$t INCLUDING DEFAULTS);"; done
} | psql -q "$floor_db"
psql -qAt "$floor_db" -c "SELECT replace(indexdef, ' ON public.', ' ON bare.') || ';' FROM pg_indexes
    WHERE schemaname = 'public' AND tablename = ANY (string_to_array('$floor_tables', ' '))" \
    >"$work/indexes.sql"
{
    echo "SET maintenance_work_mem = '512MB';"
    for t in $floor_tables; do echo "\\copy bare.$t FROM '$work/$t.copy' BINARY"; done
    sed 's/^CREATE \(UNIQUE \)\?INDEX \([a-z_0-9]*\)/CREATE \1INDEX bare_\2/' "$work/indexes.sql"
} >"$work/bare.sql"
start=$(date +%s%N)
psql -q -1 "$floor_db" -f "$work/bare.sql" >/dev/null
end=$(date +%s%N)
bare_floor_s=$(seconds "$start" "$end")
echo "floor, postgres: the same rows bare, indexes built after: $bare_floor_s s = $(echo "$stored / $bare_floor_s" | bc) events/s"
psql -q "postgresql://postgres@127.0.0.1:$port/postgres" -c "DROP DATABASE bench_floor"
echo "import over its floor, postgres: x$(echo "scale=2; ${import_s[postgres]} / $store_floor_s" | bc) (the bare floor x$(echo "scale=2; ${import_s[postgres]} / $bare_floor_s" | bc))"

median_of_3() {
    local times=()
    for _ in 1 2 3; do
        /usr/bin/time -o "$work/time.txt" -f "%e" "$@" >"$work/out.json" 2>/dev/null
        times+=("$(tail -1 "$work/time.txt")")
    done
    printf '%s\n' "${times[@]}" | sort -n | sed -n 2p
}
for p in "${pipelines[@]}"; do
    l=$(median_of_3 "$bin" --db "$lite" trace --pipeline "$p" --format json)
    lsum=$(sha256sum <"$work/out.json")
    g=$(median_of_3 "$bin" --db "$pg" trace --pipeline "$p" --format json)
    gsum=$(sha256sum <"$work/out.json")
    same=identical
    [ "$lsum" = "$gsum" ] || same=DIFFERENT
    ratio=n/a
    [ "$(echo "$l > 0" | bc)" = 1 ] && ratio=x$(echo "scale=2; $g / $l" | bc)
    echo "trace $p: sqlite $l s, postgres $g s, $ratio ($same JSON)"
done

declare -A verify_s
for store in sqlite postgres; do
    db=$lite
    [ "$store" = postgres ] && db=$pg
    # A broken chain exits 1: still timed, and shown as not intact.
    /usr/bin/time -o "$work/time.txt" -f "%e" "$bin" --db "$db" verify-log --format json \
        >"$work/verify-$store.json" || true
    verify_s[$store]=$(tail -1 "$work/time.txt")
    length=$(grep -o '"length": *[0-9]*' "$work/verify-$store.json" | grep -o '[0-9]*$')
    intact=$(grep -o '"intact": *[a-z]*' "$work/verify-$store.json" | grep -o '[a-z]*$')
    echo "verify-log, $store: ${verify_s[$store]} s = $(echo "$length / ${verify_s[$store]}" | bc) entries/s ($length entries, intact: $intact)"
done
echo "verify-log ratio postgres/sqlite: x$(echo "scale=2; ${verify_s[postgres]} / ${verify_s[sqlite]}" | bc)"

for store in sqlite postgres; do
    db=$lite
    [ "$store" = postgres ] && db=$pg
    read -r median p95 < <(record_latency "$bin" "$db" "$calls" "$work")
    echo "record, $store: median $median ms, p95 $p95 ms ($calls calls, process start included)"
done
if [ -x /usr/sbin/pgbouncer ]; then
    bouncer_port=$(free_port)
    cat >"$work/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$port dbname=bench user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
unix_socket_dir =
auth_type = trust
auth_file = $work/userlist.txt
pool_mode = transaction
default_pool_size = 4
logfile = $work/pgbouncer.log
INI
    echo '"postgres" ""' >"$work/userlist.txt"
    chown postgres: "$work/pgbouncer.ini" "$work/userlist.txt"
    runuser -u postgres -- /usr/sbin/pgbouncer "$work/pgbouncer.ini" >/dev/null 2>&1 &
    bouncer_pid=$!
    answering "$bouncer_port"
    read -r median p95 < <(record_latency "$bin" "postgresql://postgres@127.0.0.1:$bouncer_port/bench" \
        "$calls" "$work" pooled)
    echo "record, postgres through PgBouncer: median $median ms, p95 $p95 ms ($calls calls, process start included)"
fi
