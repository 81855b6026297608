#!/usr/bin/env python3
"""The script people write today: asyncio + aiohttp, a semaphore for concurrency, JSONL out.

usage: aiohttp_fetch.py TEMPLATE IDS_FILE OUT_FILE CONCURRENCY [--uvloop]
TEMPLATE contains {id}, e.g. http://127.0.0.1:8080/users/{id}
"""
import asyncio
import json
import sys

import aiohttp


async def main(template, ids_path, out_path, concurrency):
    sem = asyncio.Semaphore(concurrency)
    # aiohttp caps connections at 100 unless told otherwise; a fair comparison lifts it.
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    failed = 0
    with open(ids_path) as f:
        ids = [line.strip() for line in f if line.strip()]
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        with open(out_path, "w") as out:

            async def one(user_id):
                nonlocal failed
                async with sem:
                    try:
                        async with session.get(template.replace("{id}", user_id)) as resp:
                            if resp.status == 200:
                                record = await resp.json()
                                out.write(json.dumps(record, separators=(",", ":")) + "\n")
                            else:
                                failed += 1
                    except Exception:
                        failed += 1

            await asyncio.gather(*(one(i) for i in ids))
    if failed:
        print(f"{failed} failed", file=sys.stderr)


if __name__ == "__main__":
    if "--uvloop" in sys.argv:
        import uvloop

        uvloop.install()
        sys.argv.remove("--uvloop")
    template, ids_path, out_path, concurrency = sys.argv[1:5]
    asyncio.run(main(template, ids_path, out_path, int(concurrency)))
