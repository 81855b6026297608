#!/usr/bin/env bash
# The shell pipeline: xargs starts one curl per id, CONCURRENCY at a time, all appending to
# one file. Nothing orders their writes, which is the point of measuring it.
# usage: xargs_curl.sh TEMPLATE IDS_FILE OUT_FILE CONCURRENCY
set -euo pipefail
template=$1 ids=$2 out=$3 concurrency=$4
prefix=${template%%\{id\}*}
suffix=${template#*\{id\}}
grep -v '^$' "$ids" | xargs -P "$concurrency" -I{} \
    curl --silent --fail --write-out '\n' "${prefix}{}${suffix}" >"$out"
