"""Load test of `centernet serve` on loopback: N concurrent clients for M seconds, once per --max-batch.

Each run starts `centernet serve` as a child process on 127.0.0.1 (a free port), sends a few warm-up
requests, then has N client threads POST the same image to /predict back to back (each on its own
keep-alive connection) for M seconds. It reports requests/s, p50 / p99 / max latency, errors (any
answer but 200, or a failed connection), the server's resident memory (after warm-up,
half way, at the end) and the batch sizes the server ran, then stops the server with SIGTERM.

    python benchmarks/serve_load.py --weights runs/demo/best.pt --image data/synth/val/images/000000.jpg \\
        --clients 8 --seconds 20 --max-batch 1 8

Bounded: loopback only, at most 64 clients and 300 seconds a run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from centernet.serve import server_process

MAX_CLIENTS, MAX_SECONDS = 64, 300


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def get_json(port: int, path: str) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", path)
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


def client(port: int, image: bytes, query: str, stop_at: float, latencies: list, errors: list) -> None:
    """POST ``image`` back to back until ``stop_at``; append each latency (s) or error."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Type": "application/octet-stream"}
    while time.perf_counter() < stop_at:
        started = time.perf_counter()
        try:
            connection.request("POST", f"/predict{query}", body=image, headers=headers)
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                errors.append(f"{response.status} {body[:200]!r}")
                continue
        except (OSError, http.client.HTTPException) as error:
            errors.append(repr(error))
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            continue
        latencies.append(time.perf_counter() - started)
    connection.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def run(serve_args: list[str], image: bytes, clients: int, seconds: float, warmup: int) -> dict:
    """One server, one load: the figures of the module docstring."""
    with server_process(serve_args + ["--log-level", "warning"], stdout=subprocess.DEVNULL) as (url, process):
        port = int(url.rsplit(":", 1)[1])
        query = "?score_threshold=0.3"
        warm_errors = []
        client(port, image, query, time.perf_counter() + warmup, [], warm_errors)  # first passes allocate
        if warm_errors:
            raise RuntimeError(f"the warm-up requests failed: {warm_errors[0]}")
        before = get_json(port, "/health")["batch_sizes"]
        rss = [(0.0, rss_mb(process.pid))]  # (seconds into the load, MiB)
        latencies, errors = [], []
        stop_at = time.perf_counter() + seconds
        threads = [threading.Thread(target=client, args=(port, image, query, stop_at, latencies, errors))
                   for _ in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            time.sleep(0.5)
            rss.append((time.perf_counter() - started, rss_mb(process.pid)))
        elapsed = time.perf_counter() - started
        after = get_json(port, "/health")["batch_sizes"]
    batches = {int(size): count - before.get(size, 0) for size, count in after.items()
               if count - before.get(size, 0) > 0}
    images = sum(size * count for size, count in batches.items())
    return {"clients": clients, "seconds": round(elapsed, 1), "requests": len(latencies), "errors": len(errors),
            "first_errors": errors[:3], "requests_per_s": len(latencies) / elapsed,
            "p50_ms": 1000 * statistics.median(latencies) if latencies else None,
            "p99_ms": 1000 * percentile(latencies, 99) if latencies else None,
            "max_ms": 1000 * max(latencies) if latencies else None,
            "rss_mb": {"after_warmup": rss[0][1], "half_time": next(mb for t, mb in rss if t >= elapsed / 2),
                       "end": rss[-1][1], "max": max(mb for _, mb in rss),
                       "samples": [(round(t, 1), round(mb, 1)) for t, mb in rss[::max(1, len(rss) // 20)]]},
            "batch_sizes": dict(sorted(batches.items())),
            "mean_batch": images / max(1, sum(batches.values()))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="checkpoint to serve (best.pt)")
    parser.add_argument("--image", required=True, help="the image every request sends")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--max-batch", type=int, nargs="+", default=[1, 8], help="one run per value")
    parser.add_argument("--max-wait-ms", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=3, help="seconds of one client before the clock starts")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= MAX_CLIENTS or not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--clients 1..{MAX_CLIENTS} and --seconds up to {MAX_SECONDS}")
    image = Path(args.image).read_bytes()
    results = []
    print("| --max-batch | clients | requests | requests/s | p50 ms | p99 ms | max ms | errors | "
          "server RSS MiB (warm / half time / end) | batch sizes run (size: count) | mean batch |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for max_batch in args.max_batch:
        serve_args = ["--weights", args.weights, "--device", args.device, "--max-batch", str(max_batch),
                      "--max-wait-ms", str(args.max_wait_ms), "--max-queue", str(4 * args.clients)]
        result = {"max_batch": max_batch, **run(serve_args, image, args.clients, args.seconds, args.warmup)}
        results.append(result)
        rss = result["rss_mb"]
        sizes = ", ".join(f"{size}: {count}" for size, count in result["batch_sizes"].items())
        print(f"| {max_batch} | {result['clients']} | {result['requests']} | {result['requests_per_s']:.1f} | "
              f"{result['p50_ms']:.0f} | {result['p99_ms']:.0f} | {result['max_ms']:.0f} | {result['errors']} | "
              f"{rss['after_warmup']:.0f} / {rss['half_time']:.0f} / {rss['end']:.0f} | {sizes} | "
              f"{result['mean_batch']:.2f} |", flush=True)
        for error in result["first_errors"]:
            print(f"  error: {error}", file=sys.stderr)
    if len(results) > 1:
        base = results[0]["requests_per_s"]
        for result in results[1:]:
            print(f"throughput --max-batch {result['max_batch']} / --max-batch {results[0]['max_batch']}: "
                  f"{result['requests_per_s'] / base:.2f}x")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 1 if any(result["errors"] for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
