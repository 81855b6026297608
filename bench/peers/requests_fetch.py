#!/usr/bin/env python3
"""The synchronous version: one requests.Session, one id after another, JSONL out.

usage: requests_fetch.py TEMPLATE IDS_FILE OUT_FILE
"""
import json
import sys

import requests


def main(template, ids_path, out_path):
    failed = 0
    with requests.Session() as session, open(ids_path) as ids, open(out_path, "w") as out:
        for line in ids:
            user_id = line.strip()
            if not user_id:
                continue
            try:
                resp = session.get(template.replace("{id}", user_id), timeout=60)
                if resp.status_code == 200:
                    out.write(json.dumps(resp.json(), separators=(",", ":")) + "\n")
                else:
                    failed += 1
            except requests.RequestException:
                failed += 1
    if failed:
        print(f"{failed} failed", file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:4])
