"""Async HTTP for locksmith.aio: acquire+release pairs through each candidate, side by side.

Every competitor does the pair locksmith does (``PUT /v1/txn`` with the KV ``lock`` verb,
parsing the written ModifyIndex, then ``PUT /v1/kv/<key>?release=<session>``) on one
keep-alive connection to one dev agent, on its own key and session:

* ``raw-asyncio`` (the floor): asyncio streams, hand-written request bytes, minimal
  response parsing (status line, Content-Length, body);
* ``locksmith-transport``: locksmith.aio's ``AsyncTransport.request`` with the same paths
  and bodies (what the transport itself costs);
* ``locksmith-client``: ``AsyncConsul.kv.lock`` + ``kv.put(release=)`` (transport plus
  the shared sans-IO endpoint code: validation, JSON, parsing into KVEntry);
* ``locksmith-manager``: the whole library, ``AsyncLockManager``'s ``lock.acquire()`` +
  ``lock.release(lease)`` (the state machine, its session, its watch of the held key):
  issue #11's target is at most 1.2x the floor;
* ``h11-anyio``: h11's state machine over an anyio TCP stream;
* ``httpx``: ``httpx.AsyncClient`` (httpcore's pool, h11);
* ``locksmith-transport (trio)`` and ``locksmith-client (trio)``: the same on trio;
* ``raw-sync``: the sync floor of bench/acquire_release.py (one keep-alive
  ``http.client`` connection), for scale.

Rounds interleave the competitors in a shuffled order; each competitor runs its pairs of a
round in a fresh event loop (connect, warm up, then time each pair with perf_counter). The
process's CPU time over a round's timed pairs (``time.process_time``) is reported too, per
pair: the client's own cost, less sensitive than wall time to what else the machine runs.

Run: ``python bench/async_http.py [--quick] [--repeat N] [--pairs N]``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c
import anyio
import h11
import httpx

from locksmith.aio import AsyncConsul, AsyncLockManager
from locksmith.aio._transport import AsyncTransport

KEY = "bench/async-http/"
VALUE = b"bench"
TARGET = 1.2  # the lead's full async acquire+release vs raw-asyncio (median)
WARMUP = 30

Pair = Callable[[], Awaitable[None]]


def txn_body(key: str, sid: str) -> bytes:
    op = {
        "KV": {
            "Verb": "lock",
            "Key": key,
            "Value": base64.b64encode(VALUE).decode(),
            "Flags": 0,
            "Session": sid,
        }
    }
    return json.dumps([op]).encode()


def check_lock(status: int, body: bytes) -> None:
    if status != 200:
        raise RuntimeError(f"acquire failed: {status} {body[:200]!r}")
    int(json.loads(body)["Results"][0]["KV"]["ModifyIndex"])


def check_release(status: int, body: bytes) -> None:
    if status != 200 or body.strip() != b"true":
        raise RuntimeError(f"release failed: {status} {body[:200]!r}")


#: CPU seconds of the last timed batch (process_time), read by run_one.
_LAST_CPU: list[float] = []


async def time_pairs(pair: Pair, n: int) -> list[float]:
    for _ in range(WARMUP):
        await pair()
    out = []
    cpu0 = time.process_time()
    for _ in range(n):
        t0 = time.perf_counter()
        await pair()
        out.append((time.perf_counter() - t0) * 1000)
    _LAST_CPU.append(time.process_time() - cpu0)
    return out


# --------------------------------------------------------------------------- competitors


async def raw_asyncio(addr: str, key: str, sid: str, n: int) -> list[float]:
    host, port = addr.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    lock_body = txn_body(key, sid)
    lock_req = (
        f"PUT /v1/txn HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {len(lock_body)}\r\n\r\n"
    ).encode() + lock_body
    release_req = (
        f"PUT /v1/kv/{key}?release={sid} HTTP/1.1\r\nHost: {addr}\r\n"
        f"Content-Length: {len(VALUE)}\r\n\r\n"
    ).encode() + VALUE

    async def call(req: bytes) -> tuple[int, bytes]:
        writer.write(req)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.index(b"content-length:") + 15
        length = int(lower[at : lower.index(b"\r\n", at)])
        return status, await reader.readexactly(length)

    async def pair() -> None:
        check_lock(*await call(lock_req))
        check_release(*await call(release_req))

    try:
        return await time_pairs(pair, n)
    finally:
        writer.close()
        await writer.wait_closed()


async def locksmith_transport(addr: str, key: str, sid: str, n: int) -> list[float]:
    consul = AsyncConsul(addr)
    transport: AsyncTransport = consul._transport
    lock_body = txn_body(key, sid)
    params = [("release", sid)]

    async def pair() -> None:
        resp = await transport.request("PUT", "/v1/txn", body=lock_body)
        check_lock(resp.status, resp.body)
        resp = await transport.request("PUT", f"/v1/kv/{key}", params=params, body=VALUE)
        check_release(resp.status, resp.body)

    try:
        return await time_pairs(pair, n)
    finally:
        await consul.aclose()


async def locksmith_client(addr: str, key: str, sid: str, n: int) -> list[float]:
    async with AsyncConsul(addr) as consul:

        async def pair() -> None:
            if await consul.kv.lock(key, VALUE, sid) is None:
                raise RuntimeError("acquire failed")
            if not await consul.kv.put(key, VALUE, release=sid):
                raise RuntimeError("release failed")

        return await time_pairs(pair, n)


async def locksmith_manager(addr: str, key: str, sid: str, n: int) -> list[float]:
    del sid  # the manager makes its own session (before the timed pairs)
    async with (
        AsyncConsul(addr) as consul,
        AsyncLockManager(consul, ttl="600s", lock_delay=0, name="bench-async-manager") as mgr,
    ):
        lock = mgr.lock(key, VALUE)

        async def pair() -> None:
            lease = await lock.acquire()
            await lock.release(lease)

        return await time_pairs(pair, n)


async def h11_anyio(addr: str, key: str, sid: str, n: int) -> list[float]:
    host, port = addr.rsplit(":", 1)
    stream = await anyio.connect_tcp(host, int(port))
    conn = h11.Connection(h11.CLIENT)
    lock_body = txn_body(key, sid)

    async def call(target: str, body: bytes) -> tuple[int, bytes]:
        headers = [("Host", addr), ("Content-Length", str(len(body)))]
        data = conn.send(h11.Request(method="PUT", target=target, headers=headers))
        data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        await stream.send(data)
        status, chunks = 0, []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive())
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                conn.start_next_cycle()
                return status, b"".join(chunks)
            else:
                raise RuntimeError(f"h11: unexpected {event!r}")

    async def pair() -> None:
        check_lock(*await call("/v1/txn", lock_body))
        check_release(*await call(f"/v1/kv/{key}?release={sid}", VALUE))

    try:
        return await time_pairs(pair, n)
    finally:
        await stream.aclose()


async def httpx_client(addr: str, key: str, sid: str, n: int) -> list[float]:
    lock_body = txn_body(key, sid)
    async with httpx.AsyncClient(base_url=f"http://{addr}") as client:

        async def pair() -> None:
            resp = await client.put("/v1/txn", content=lock_body)
            check_lock(resp.status_code, resp.content)
            resp = await client.put(f"/v1/kv/{key}", params={"release": sid}, content=VALUE)
            check_release(resp.status_code, resp.content)

        return await time_pairs(pair, n)


def raw_sync(addr: str, key: str, sid: str, n: int) -> list[float]:
    raw = c.RawConsul(addr)
    try:
        for _ in range(WARMUP):
            raw.lock(key, VALUE, sid)
            raw.release(key, VALUE, sid)
        out = []
        cpu0 = time.process_time()
        for _ in range(n):
            t0 = time.perf_counter()
            if raw.lock(key, VALUE, sid) is None or not raw.release(key, VALUE, sid):
                raise RuntimeError("raw-sync pair failed")
            out.append((time.perf_counter() - t0) * 1000)
        _LAST_CPU.append(time.process_time() - cpu0)
        return out
    finally:
        raw.close()


AsyncFn = Callable[[str, str, str, int], Awaitable[list[float]]]

#: name -> (backend, coroutine function); backend "sync" runs without an event loop.
COMPETITORS: dict[str, tuple[str, Any]] = {
    "raw-asyncio": ("asyncio", raw_asyncio),
    "locksmith-transport": ("asyncio", locksmith_transport),
    "locksmith-client": ("asyncio", locksmith_client),
    "locksmith-manager": ("asyncio", locksmith_manager),
    "h11-anyio": ("asyncio", h11_anyio),
    "httpx": ("asyncio", httpx_client),
    "locksmith-transport (trio)": ("trio", locksmith_transport),
    "locksmith-client (trio)": ("trio", locksmith_client),
    "locksmith-manager (trio)": ("trio", locksmith_manager),
    "raw-sync": ("sync", raw_sync),
}


def run_one(name: str, addr: str, key: str, sid: str, n: int) -> tuple[list[float], float]:
    """One round of a competitor: ms per pair, and CPU microseconds per pair."""
    backend, fn = COMPETITORS[name]
    _LAST_CPU.clear()
    if backend == "sync":
        samples = list(fn(addr, key, sid, n))
    elif backend == "asyncio":
        samples = list(asyncio.run(fn(addr, key, sid, n)))
    else:
        samples = list(anyio.run(fn, addr, key, sid, n, backend="trio"))
    return samples, _LAST_CPU[0] / n * 1e6


def run(addr: str, names: list[str], *, repeat: int, pairs: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    raw = c.RawConsul(addr)
    keys = {n: KEY + "".join(ch if ch.isalnum() else "-" for ch in n) for n in names}
    sids = {
        n: raw.session(ttl="600s", lock_delay="0s", name=f"bench-{keys[n][-20:]}") for n in names
    }
    samples: dict[str, list[float]] = {n: [] for n in names}
    round_medians: dict[str, list[float]] = {n: [] for n in names}
    cpu_us: dict[str, list[float]] = {n: [] for n in names}
    try:
        for r in range(repeat):
            order = list(names)
            rng.shuffle(order)
            for n in order:
                s, cpu = run_one(n, addr, keys[n], sids[n], pairs)
                samples[n] += s
                round_medians[n].append(c.summarize(s)["median"])
                cpu_us[n].append(cpu)
            print(
                f"round {r + 1}/{repeat}: "
                + ", ".join(f"{n} {round_medians[n][-1]:.3f}" for n in names)
            )
    finally:
        for sid in sids.values():
            raw.destroy(sid)
        raw.close()
    return {"samples": samples, "round_medians": round_medians, "cpu_us": cpu_us}


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=None, help="timed pairs per competitor per round")
    p.add_argument("--only", nargs="*", default=list(COMPETITORS), choices=list(COMPETITORS))
    args = p.parse_args()
    repeat = args.repeat or (4 if args.quick else 10)
    pairs = args.pairs or (200 if args.quick else 1000)
    names = [n for n in COMPETITORS if n in args.only]
    if "raw-asyncio" not in names:
        names.insert(0, "raw-asyncio")
    with c.dev_agent(args.consul) as agent:
        info = c.machine_info(agent.binary)
        info["anyio"] = _version("anyio")
        info["trio"] = _version("trio")
        info["h11"] = _version("h11")
        info["httpx"] = _version("httpx")
        print(f"agent {agent.http_addr}; {repeat} rounds x {pairs} pairs per competitor")
        res = run(agent.http_addr, names, repeat=repeat, pairs=pairs, seed=args.seed)
    stats = {n: c.summarize(v) for n, v in res["samples"].items()}
    floor = stats["raw-asyncio"]["median"]
    floor_rounds = res["round_medians"]["raw-asyncio"]
    floor_cpu = statistics.median(res["cpu_us"]["raw-asyncio"])
    rows = []
    summary: dict[str, Any] = {}
    for n in names:
        s = stats[n]
        per_round = [a / b for a, b in zip(res["round_medians"][n], floor_rounds, strict=True)]
        cpu = statistics.median(res["cpu_us"][n])
        summary[n] = {
            "cpu_us_per_pair_median_of_rounds": cpu,
            "cpu_us_per_pair_rounds": res["cpu_us"][n],
            "cpu_ratio_vs_floor": cpu / floor_cpu,
            "backend": COMPETITORS[n][0],
            "ms": s,
            "pairs_per_s_at_mean": 1000 / s["mean"],
            "ratio_median_vs_floor": s["median"] / floor,
            "ratio_p90_vs_floor": s["p90"] / stats["raw-asyncio"]["p90"],
            "ratio_per_round": per_round,
            "round_medians_ms": res["round_medians"][n],
        }
        rows.append(
            [
                n,
                s["n"],
                c.fmt(s["median"]),
                c.fmt(s["p90"]),
                c.fmt(s["p99"]),
                f"{s['median'] / floor:.2f}x",
                f"{min(per_round):.2f}-{max(per_round):.2f}x",
                f"{1000 / s['mean']:.0f}",
                f"{cpu:.0f}",
                f"{cpu / floor_cpu:.2f}x",
            ]
        )
    print()
    c.print_table(
        [
            "competitor",
            "pairs",
            "median ms",
            "p90 ms",
            "p99 ms",
            "vs floor",
            "rounds",
            "pairs/s",
            "CPU us/pair",
            "CPU vs floor",
        ],
        rows,
    )
    verdict = None
    if "locksmith-manager" in summary:
        ratio = summary["locksmith-manager"]["ratio_median_vs_floor"]
        verdict = ratio <= TARGET
        print(
            f"\ntarget locksmith-manager <= {TARGET}x raw-asyncio (median): {ratio:.2f}x -> "
            + ("met" if verdict else "MISSED")
        )
    data = {
        "benchmark": "async_http",
        "verdict_manager_within_target": verdict,
        "quick": args.quick,
        "params": {"repeat": repeat, "pairs": pairs, "warmup": WARMUP, "seed": args.seed},
        "machine": info,
        "target": {"full_async_acquire_release_vs_raw_asyncio_median_max": TARGET},
        "results": summary,
    }
    c.save("async_http", args.quick, args.out, data)
    if not args.no_chart:
        c.bar_chart(
            c.chart_path("async_http", args.quick, args.out),
            f"Async acquire+release pairs, dev agent ({info['consul']}, {info['cores']} cores)",
            {"acquire+release": {n: stats[n] for n in names}},
            "ms per pair",
            ref_lines={f"{TARGET}x floor": TARGET * floor},
        )


def _version(dist: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
