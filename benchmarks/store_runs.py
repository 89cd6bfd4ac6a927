"""Machine B's cold run against machine A's through the shared store, and the store's cost on a warm hit.

    python benchmarks/store_runs.py [cpu16] [--warm 3] [--store redis://host:port/db] [--out FILE]

For each mode (data only; signed, with TL_AUTOTUNE_STORE_SECRET) the store is emptied,
"machine A" tunes the space cold (fresh plugin and TileLang caches) and pushes, then
"machine B" runs cold too (its own fresh caches) against the same store. Then warm runs
on A's cache, interleaved with and without --tl-store, give the store's cost on a local
hit. Each run is a whole `python -m pytest` process, timed from outside (plugin_runs.run_once).
Without --store a private redis-server is started on a free port and stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.plugin_runs import SPACES, run_once, write_test  # noqa: E402


def start_redis(workdir: Path) -> tuple[str, subprocess.Popen]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server), or pass --store URL")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    return f"redis://127.0.0.1:{port}/0", proc


def flush(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("space", nargs="?", default="cpu16", choices=sorted(SPACES))
    parser.add_argument("--warm", type=int, default=3, help="warm runs with and without the store (interleaved)")
    parser.add_argument("--store", help="an existing Redis (its database is emptied!); default: a private one")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="tlstore-"))
    url, server = (args.store, None) if args.store else start_redis(work)
    test = write_test(work, args.space, "")
    out: dict = {"space": args.space, "modes": {}}
    try:
        for mode in ("data", "signed"):
            flush(url)
            os.environ.pop("TL_AUTOTUNE_STORE_SECRET", None)
            if mode == "signed":
                os.environ["TL_AUTOTUNE_STORE_SECRET"] = "benchmark-secret"
            runs = {}
            for machine in ("A", "B"):
                cache, tl_cache = work / f"{mode}-{machine}", work / f"{mode}-{machine}-tilelang"
                cache.mkdir()
                runs[machine] = run_once(test, cache, tl_cache, [f"--tl-store={url}"])
                # Kernels this machine compiled (an entry's phases may be the other machine's).
                runs[machine]["compiled"] = len(list(cache.glob("kernels/*")))
                print(mode, machine, json.dumps(runs[machine]), flush=True)
            out["modes"][mode] = runs
        os.environ.pop("TL_AUTOTUNE_STORE_SECRET", None)
        cache, tl_cache = work / "data-A", work / "data-A-tilelang"
        warm: dict[str, list] = {"local only": [], "with store": []}
        for _ in range(args.warm):
            warm["local only"].append(run_once(test, cache, tl_cache, []))
            warm["with store"].append(run_once(test, cache, tl_cache, [f"--tl-store={url}"]))
        out["warm"] = warm
    finally:
        if server is not None:
            server.terminate()
            server.wait()
    print(summary(out))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


def summary(out: dict) -> str:
    lines = [f"space {out['space']}", f"{'mode':7} {'machine':8} {'wall s':>7} {'test s':>7} {'cache':6} "
             f"{'compiled':>8}  config"]
    for mode, runs in out["modes"].items():
        for machine, r in runs.items():
            lines.append(f"{mode:7} {machine:8} {r['wall_s']:7.2f} {r['test_time_s']:7.2f} {r['cache']:6} "
                         f"{r['compiled']:8}  {json.dumps(r['config'], sort_keys=True)}")
        a, b = runs["A"], runs["B"]
        lines.append(f"{mode:7} B/A: wall {b['wall_s'] / a['wall_s']:.2f}, test time "
                     f"{b['test_time_s'] / a['test_time_s']:.2f}")
    for kind, runs in out["warm"].items():
        lines.append(f"warm {kind:10}: median wall {statistics.median(r['wall_s'] for r in runs):.2f} s, "
                     f"median test time {statistics.median(r['test_time_s'] for r in runs) * 1000:.1f} ms "
                     f"({', '.join(r['cache'] for r in runs)})")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
