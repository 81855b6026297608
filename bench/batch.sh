#!/usr/bin/env bash
# Benchmarks for `userfetch batch` against the demo API (`userfetch serve`) on this machine.
#
#   bench/batch.sh            # every scenario
#   bench/batch.sh 1 4        # only scenarios 1 and 4
#
# Needs bash, GNU time (/usr/bin/time -v: apt-get install time) and, optionally, taskset to
# put the server and the client on different cores. Each scenario prints wall time, CPU time
# and peak RSS of the client; the server runs in its own process and is not counted.
# USERFETCH=/path/to/userfetch skips the release build.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${USERFETCH:-}" ]]; then
    cargo build --release --locked --quiet
    USERFETCH="$PWD/target/release/userfetch"
fi
[[ -x /usr/bin/time ]] || { echo "bench: /usr/bin/time is missing (apt-get install time)" >&2; exit 2; }

work=$(mktemp -d)
server_pid=""
cleanup() {
    [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

pin_server=() pin_client=()
if command -v taskset >/dev/null && [[ $(nproc) -ge 2 ]]; then
    pin_server=(taskset -c 0) pin_client=(taskset -c 1)
fi

# serve LATENCY USERS: starts a fresh demo API and sets $template.
serve() {
    [[ -n "$server_pid" ]] && { kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; }
    "${pin_server[@]}" "$USERFETCH" serve --port 0 --latency "$1" --users "$2" \
        >"$work/serve.out" 2>"$work/serve.err" &
    server_pid=$!
    for _ in $(seq 100); do
        template=$(head -n1 "$work/serve.out" 2>/dev/null || true)
        [[ -n "$template" ]] && return
        sleep 0.05
    done
    echo "bench: the demo API did not start" >&2
    exit 1
}

# measure NAME ARGS...: runs the client once under /usr/bin/time and prints one result line.
measure() {
    local name=$1
    shift
    /usr/bin/time -v -o "$work/time.txt" "${pin_client[@]}" "$USERFETCH" --api "$template" \
        --cache "$work/cache.sqlite3" "$@" 2>"$work/stderr.txt" >/dev/null || {
        echo "bench: $name failed:" >&2
        cat "$work/stderr.txt" >&2
        exit 1
    }
    local wall user sys rss
    wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$work/time.txt")
    user=$(sed -n 's/.*User time (seconds): //p' "$work/time.txt")
    sys=$(sed -n 's/.*System time (seconds): //p' "$work/time.txt")
    rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/time.txt")
    awk -v n="$name" -v w="$wall" -v u="$user" -v s="$sys" -v r="$rss" \
        'BEGIN { printf "%-44s wall %8s  cpu %5.2f s  peak RSS %6.1f MB\n", n, w, u + s, r / 1024 }'
    grep -E '^userfetch: batch' "$work/stderr.txt" | sed 's/^/    /'
}

fresh_cache() { rm -f "$work"/cache.sqlite3*; }

selected=("$@")
want_any() { [[ ${#selected[@]} -eq 0 ]] || [[ " ${selected[*]} " == *" $1 "* ]]; }

seq 1 10000 >"$work/ids-10k.txt"

if want_any 1 || want_any 4; then
    serve 50ms 10000
    fresh_cache
    if want_any 1; then
        measure "1. 10k ids, 50 ms latency, C=500, HTTP/1.1" \
            --http1 batch "$work/ids-10k.txt" --out "$work/out.jsonl" --concurrency 500
        fresh_cache
        measure "1. 10k ids, 50 ms latency, C=500, HTTP/2" \
            --http2 batch "$work/ids-10k.txt" --out "$work/out.jsonl" --concurrency 500
    fi
    if want_any 4; then
        want_any 1 || measure "   (first run for scenario 4)" \
            batch "$work/ids-10k.txt" --out "$work/out.jsonl" --concurrency 500
        measure "4. the same command again (all done)" \
            batch "$work/ids-10k.txt" --out "$work/out.jsonl" --concurrency 500
    fi
fi

if want_any 2; then
    serve 1s 10000
    fresh_cache
    measure "2. 10k ids, 1 s latency, C=10k, HTTP/2" \
        --http2 batch "$work/ids-10k.txt" --out "$work/out.jsonl" --concurrency 10000
fi

if want_any 3; then
    seq 1 200000 >"$work/ids-200k.txt"
    serve 0ms 200000
    fresh_cache
    measure "3. 200k ids, 0 ms latency, C=256, HTTP/2" \
        --http2 batch "$work/ids-200k.txt" --out "$work/out.jsonl" --concurrency 256
fi

if want_any 5; then
    # Memory must not grow with the input: 2M ids should peak where 200k did.
    seq 1 2000000 >"$work/ids-2m.txt"
    serve 0ms 2000000
    fresh_cache
    measure "5. 2M ids, 0 ms latency, C=256, HTTP/2" \
        --http2 batch "$work/ids-2m.txt" --out "$work/out.jsonl" --concurrency 256
fi
