"""Benchmark: the Ray engine driver's cost per finished item as the cluster grows (issue 13,
the model in docs/scale.md).

The driver of :class:`defectforge.engine.ray_engine.RayEngine` keeps ``QUEUE_PER_WORKER``
items in flight per worker and, for every finished item, calls ``ray.wait`` on the list
of all in-flight references, ``ray.get`` on the finished one and submits the next. With
W workers about ``2 W`` references are in flight, so this cost grows with the cluster.
This measures it without a cluster: ``n`` references held open by one zero-CPU async
actor stand for the busy workers' items; each step makes one more reference ready (a
``ray.put``), waits for it among all the open ones, gets it and submits a small task, as
the engine's loop does. Also times the journal line (append + flush + fsync) the
``synth`` driver writes per item, in the output folder's file system.

    .venv/bin/python bench/bench_ray_driver.py [--sizes 2,64,512,2048] [--steps 200] [--dir OUT_FS_DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2,64,512,2048", help="references in flight (about 2 per worker)")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--dir", type=Path, default=None, help="folder on the output file system (journal timing)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "ray_driver.md")
    args = ap.parse_args(argv)
    import ray
    from _machine import uptime  # this folder is on sys.path when run as a script
    from bench_ray import write_page

    sizes = [int(x) for x in args.sizes.split(",")]
    up0 = uptime()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="WARNING")

    @ray.remote(num_cpus=0, max_concurrency=10000)
    class Holder:
        async def hold(self, s: float) -> int:
            import asyncio

            await asyncio.sleep(s)
            return 0

    @ray.remote(num_cpus=0)
    def small(i: int) -> int:
        return i

    holder = Holder.remote()
    ray.get(holder.hold.remote(0))
    rows = []
    for n in sizes:
        pending = [holder.hold.remote(600) for _ in range(n - 1)]
        time.sleep(min(10.0, 0.005 * n))  # let the holds reach the actor
        inflight = {r: None for r in pending}
        cpu0, t0 = time.process_time(), time.perf_counter()
        for i in range(args.steps):
            ref = ray.put(i)
            inflight[ref] = None
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for r in ready:
                inflight.pop(r)
                ray.get(r)
        wall = 1000 * (time.perf_counter() - t0) / args.steps
        cpu = 1000 * (time.process_time() - cpu0) / args.steps
        ray.get([small.remote(i) for i in range(20)])  # the tasks' path stays warm
        for r in pending:
            ray.cancel(r, force=False)
        rows.append((n, wall, cpu))
        print(n, f"{wall:.2f} ms wall, {cpu:.2f} ms CPU per item", flush=True)
    ray.shutdown()

    folder = args.dir or Path(tempfile.mkdtemp(prefix="bench_journal_"))
    jpath = Path(folder) / "journal.bench.jsonl"
    line = '{"index": 123456, "files": ["images/s_123456.png", "masks/s_123456.png"], "sha": "%s"}\n' % ("0" * 64)
    t0 = time.perf_counter()
    with open(jpath, "a", encoding="utf-8") as fh:
        for _ in range(args.steps):
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
    journal_ms = 1000 * (time.perf_counter() - t0) / args.steps
    jpath.unlink()
    up1 = uptime()

    lines = ["# Ray engine: driver cost per item against references in flight", "",
             f"`python bench/bench_ray_driver.py --sizes {args.sizes} --steps {args.steps}` on "
             f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()} with {os.cpu_count()} CPUs, "
             f"Ray {ray.__version__}. Load (`uptime`) before: `{up0}`; after: `{up1}` (the driver shared the cores "
             "with other jobs, so these are upper bounds).", "",
             "| references in flight (~2 per worker) | wall per item (ms) | driver CPU per item (ms) |",
             "| ---: | ---: | ---: |"]
    lines += [f"| {n} | {w:.2f} | {c:.2f} |" for n, w, c in rows]
    lines += ["", f"Journal line (append + flush + fsync) on {'the given folder' if args.dir else 'the local temp disk'}: "
              f"{journal_ms:.2f} ms per item.", ""]
    return write_page(args.out, lines)


if __name__ == "__main__":
    raise SystemExit(main())
