#!/usr/bin/env bash
# curl's own parallel mode: one process, every URL in a config file. Parallel transfers
# written to one stdout interleave mid-body, so each body goes to its own file and the files
# are joined into JSONL afterwards (that step is part of what is timed).
# usage: curl_parallel.sh TEMPLATE IDS_FILE OUT_FILE CONCURRENCY
set -euo pipefail
template=$1 ids=$2 out=$3 concurrency=$4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
while IFS= read -r id; do
    [ -n "$id" ] && printf 'url = "%s"\noutput = "%s/%s.json"\n' "${template/\{id\}/$id}" "$work" "$id"
done <"$ids" >"$work/config"
curl --silent --fail --parallel --parallel-immediate --parallel-max "$concurrency" \
    --config "$work/config" || true
# awk 1 ends each body with a newline.
find "$work" -name '*.json' -exec awk 1 {} + >"$out"
