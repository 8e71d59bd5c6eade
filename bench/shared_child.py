"""One shared-budget run: ``P`` client processes, one limit shared through Redis or SQLite.

Each child process is forked from the bench (so it starts with openai, throttlepool and
pyrate-limiter imported: a cold import costs seconds on a loaded machine), builds its client
and limiter, makes two untimed warm-up calls while the server has no limit (SDK lazy models),
says ``ready`` and waits. The parent then
sets the server's limit, resets its windows and statistics, and sends ``go`` to every child
at once; wall time runs from ``go`` to the last child's last item (``time.time()``, one clock
for all processes). The children take every ``P``-th item, so the items are the workload's.

Contenders:

- ``throttlepool``: ``ThreadedBatchRunner(OpenAIAdapter(...), batch_size=C,
  limits=["L/Ws"], limiter_url=URL, retries=5)``, the URL ``redis://127.0.0.1:PORT/0`` or
  ``sqlite:///path``.
- ``pyrate-limiter + threads``: ``Limiter(RedisBucket.init([Rate(L, W)], redis, key))`` or
  ``Limiter(SQLiteBucket.init_from_file([Rate(L, W)], db_path=path, use_file_lock=True))``
  (its documented multi-process SQLite setup), blocking ``try_acquire`` before each call in
  a ``ThreadPoolExecutor(C)``.
"""

from __future__ import annotations

import multiprocessing
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .peers import API_KEY, MODEL
from .workloads import REPLY_PREFIX, RunRecord, Workload, new_record, server_figures


def _client(spec: dict[str, Any]) -> Any:
    import openai

    return openai.OpenAI(base_url=spec["base_url"], api_key=API_KEY, timeout=spec["timeout"])


def _runner(spec: dict[str, Any], call: Any, extra: dict[str, Any]) -> Any:
    """``run(items) -> results`` of the contender, its limiter built and connected."""
    limit, window, c, url = spec["limit"], spec["window"], spec["concurrency"], spec["url"]
    if spec["kind"] == "throttlepool":
        from throttlepool import ThreadedBatchRunner
        from throttlepool.adapters import OpenAIAdapter

        adapter = OpenAIAdapter(_client(spec), model=MODEL, extract="text",
                                max_tokens=spec["max_tokens"])
        runner: Any = ThreadedBatchRunner(
            adapter, batch_size=c, limits=[f"{limit}/{window:g}s"], limiter_url=url,
            timeout=spec["timeout"], retries=5, progress=False)

        def run_throttlepool(items: list[str]) -> list[Any]:
            with runner:
                result = runner.run(items)
            st = result.stats
            extra.update(attempts=st.calls, retries=st.retries, rate_limited=st.rate_limited,
                         rate_limit_wait=st.rate_limit_wait)
            return [v if e is None else f"error: {e!r}"
                    for v, e in zip(result.results, result.errors, strict=True)]

        return run_throttlepool
    from pyrate_limiter import Duration, Limiter, Rate, RedisBucket, SQLiteBucket

    rates = [Rate(limit, int(Duration.SECOND * window))]
    bucket: Any
    if url.startswith("redis"):
        import redis

        bucket = RedisBucket.init(rates, redis.Redis.from_url(url), "bench-shared")
    else:
        bucket = SQLiteBucket.init_from_file(rates, db_path=url[len("sqlite:///"):],
                                             use_file_lock=True)
    limiter = Limiter(bucket)

    def limited(prompt: str) -> Any:
        limiter.try_acquire("openai", 1)
        return call(prompt)

    def run_pyrate(items: list[str]) -> list[Any]:
        with ThreadPoolExecutor(max_workers=c) as pool:
            return list(pool.map(limited, items))

    return run_pyrate


def _child(spec: dict[str, Any], conn: Any) -> None:
    """One client process (forked: the parent's imports are already done)."""
    try:
        plain = _client(spec)

        def call(prompt: str) -> Any:
            try:
                resp = plain.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": prompt}],
                    max_tokens=spec["max_tokens"])
                return resp.choices[0].message.content or ""
            except Exception as exc:  # one failed item never stops the others
                return f"error: {exc!r}"

        for prompt in ("warm up a", "warm up b"):
            call(prompt)
        extra: dict[str, Any] = {}
        run = _runner(spec, call, extra)
        conn.send("ready")
        conn.recv()
        results = run(spec["items"])
        conn.send({"results": results, "end": time.time(), "extra": extra})
    except BaseException:
        conn.send({"error": traceback.format_exc()[-1500:]})
    finally:
        conn.close()


def _stop(procs: list[Any]) -> None:
    for p in procs:
        p.join(30)
        if p.is_alive():
            p.kill()
            p.join()


def run_shared(sim: Any, wl: Workload, name: str, backend: str, url: str) -> RunRecord:
    """One contender on one backend: ``wl.processes`` children, one simulator, one budget."""
    rec = new_record(wl, f"{name}, {backend}")
    items = wl.items()
    kind = "throttlepool" if name == "throttlepool" else "pyrate"
    sim.configure(rpm=None, tpm=None)  # the warm-up calls do not count
    # Imported here, so that the forked children start with them loaded (a cold import of
    # openai and throttlepool takes seconds on a loaded machine).
    import pyrate_limiter  # noqa: F401

    import throttlepool.adapters  # noqa: F401

    # And one call from here: the SDK caches its platform headers and lazy models, which
    # took 1.8 s per child when each built them under load.
    _client({"base_url": sim.openai_base_url, "timeout": wl.timeout}).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "warm up"}], max_tokens=4)
    ctx = multiprocessing.get_context("fork")
    procs, conns = [], []
    for i in range(wl.processes):
        spec = {"kind": kind, "url": url, "base_url": sim.openai_base_url,
                "timeout": wl.timeout, "max_tokens": wl.max_tokens, "limit": wl.rpm,
                "window": wl.window, "concurrency": wl.concurrency,
                "items": items[i::wl.processes]}
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=_child, args=(spec, theirs), daemon=True)
        proc.start()
        theirs.close()
        procs.append(proc)
        conns.append(mine)
    for conn in conns:
        msg = conn.recv() if conn.poll(120) else {"error": "no answer in 120 s"}
        if msg != "ready":
            _stop(procs)
            rec.status = f"error: {msg['error'].strip().splitlines()[-1]}"
            return rec
    sim.configure(rpm=wl.rpm, tpm=wl.tpm)
    sim.reset()
    t0 = time.time()
    for conn in conns:
        conn.send("go")
    outs = [conn.recv() for conn in conns]
    _stop(procs)
    errors = [o["error"] for o in outs if "error" in o]
    if errors:
        rec.status = f"error: {errors[0].strip().splitlines()[-1]}"
        return rec
    rec.wall = max(o["end"] for o in outs) - t0
    results: list[Any] = [None] * len(items)
    for i, out in enumerate(outs):
        results[i::wl.processes] = out["results"]
    server_figures(rec, sim, results, items)
    for out in outs:
        for key, value in out["extra"].items():
            rec.extra[key] = rec.extra.get(key, 0) + value
    rec.extra["wrong"] = [r for r in results if r != REPLY_PREFIX and
                          not str(r).startswith(REPLY_PREFIX)][:3]
    return rec
