#!/usr/bin/env bash
# curl's own parallel mode: one process, every URL in a config file, bodies to stdout.
# usage: curl_parallel.sh TEMPLATE IDS_FILE OUT_FILE CONCURRENCY
set -euo pipefail
template=$1 ids=$2 out=$3 concurrency=$4
config=$(mktemp)
trap 'rm -f "$config"' EXIT
# -w '\n' ends each body with a newline so the output is JSONL.
while IFS= read -r id; do
    [ -n "$id" ] && printf 'url = "%s"\n' "${template/\{id\}/$id}"
done <"$ids" >"$config"
curl --silent --parallel --parallel-immediate --parallel-max "$concurrency" \
    --write-out '\n' --config "$config" >"$out"
