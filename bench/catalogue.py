"""The server workloads and their sizes, for ``--quick`` (day-to-day, < 3 min with every
section) and for the full run (sizes that can show 0.99 on 60 s windows).

Why these sizes:

- Every rate-bound workload has a whole number of windows of items (``n = q * L``), so the
  limit binds at ``q - 1`` window boundaries and each boundary weighs the same in the ideal
  (see :func:`bench.workloads.ideal_time` for how a partial last window would count).
- 1 s windows: the issue's example, 12 requests/s, 120 items, concurrency 8, latency 0.1 s
  (ideal 9.2 s: 10 windows, 9 boundaries).
- 6 s windows: the long-standing rate-bound workload (60 per 6 s, 180 items, concurrency 16,
  latency 0.2 s, ideal 12.8 s), kept so before/after figures compare.
- 60 s windows: 120 per 60 s, 360 items (3 windows, 2 boundaries), concurrency 8, latency
  0.2 s: ideal 123 s. 0.99 then means at most 1.2 s lost over the two boundaries, well above
  the few tens of milliseconds of start-up and scheduling noise. Only the contenders with a
  limiter (and ThreadPoolExecutor as the no-limiter baseline) run it: about 2 minutes each.
- ``--quick`` keeps the 1 s and 6 s windows at two to four windows of items, runs the peers
  that matter on the longer ones (ThreadPoolExecutor, pyrate-limiter + threads, throttlepool),
  drops the sequential loop and tqdm's thread_map everywhere, and leaves out the 60 s
  windows, which cannot fit in 3 minutes.
"""

from __future__ import annotations

from .workloads import NO_LIMIT_RPM, Workload

WITH_LIMITER = ("ThreadPoolExecutor", "pyrate-limiter + threads", "aiometer + to_thread",
                "langchain batch", "throttlepool")
QUICK_PEERS = ("ThreadPoolExecutor", "pyrate-limiter + threads", "throttlepool")
# --quick leaves out the sequential loop (seconds of wall time that tell nothing new) and
# tqdm's thread_map (a ThreadPoolExecutor with a bar: the same figures).
QUICK_ALL = ("ThreadPoolExecutor", "pyrate-limiter + threads", "aiometer + to_thread",
             "langchain batch", "throttlepool")
SHARED_PEERS = ("pyrate-limiter + threads", "throttlepool")

RATE_NOTE = ("from the limit L per window W, concurrency C (over all processes) and latency d: "
             "the first window admits L at once (C at a time), then L more each time the window "
             "slides past earlier admissions; t_i = max(t_{i-1}, t_{i-C} + d, t_{i-L} + W), "
             "ideal = t_last + d. With n = q L items that is about (q - 1) W plus the last "
             "window's burst; a partial last window would cost a whole window's wait")
LATENCY_NOTE = (f"no limit binds (server limit {NO_LIMIT_RPM:,} per window, told to the "
                "client): ideal = ceil(items / batch_size) x latency")


def _token_note(wl: Workload) -> str:
    edge = wl.estimate() - wl.charge()
    est = (f"a client's estimate by the documented rule, ceil({wl.prompt_chars} / 4) + "
           f"{wl.max_tokens} = {wl.estimate()}, is "
           + ("exactly the charge" if edge == 0 else f"{edge} token above the charge (the "
              "knife-edge: counting the estimate, a window holds one request fewer)"))
    return (f"the simulator charges prompt//4 + max_tokens = {wl.charge()} tokens per request "
            f"at admission (as OpenAI does) and the reply uses {wl.usage()} "
            f"(reservation / usage = {wl.charge() / wl.usage():.2f}); {est}; pyrate-limiter "
            "gets that estimate as its weight. The TPM admits L = TPM // charge = "
            f"{wl.per_window()} requests per window; then as rate-bound: {RATE_NOTE}")


def workloads(quick: bool) -> list[Workload]:
    """Every server workload, sized for ``--quick`` or the full run."""
    lat = 0.1 if quick else 0.2
    peers_long = QUICK_PEERS if quick else ()
    everyone = QUICK_ALL if quick else ()
    # 1 s windows: the example (quick: 4 windows instead of 10).
    r1 = dict(n=48 if quick else 120, concurrency=8, latency=0.1, window=1.0, rpm=12)
    # 6 s windows (quick: 2 windows of 24).
    r6 = (dict(n=48, concurrency=8, latency=0.1, window=6.0, rpm=24) if quick else
          dict(n=180, concurrency=16, latency=0.2, window=6.0, rpm=60))
    r60 = dict(n=360, concurrency=8, latency=0.2, window=60.0, rpm=120)
    # Token-bound: 2 s windows in quick, 6 s in the full run.
    tok = (dict(n=48, concurrency=8, latency=0.1, window=2.0) if quick else
           dict(n=180, concurrency=16, latency=0.2, window=6.0))
    tok_l = 16 if quick else 60
    # Reservation = 2 x usage: 56 chars -> 14 prompt tokens, a 15-token reply, max_tokens 44
    # (charge 58 = 2 x 29). The knife-edge: 58 chars -> floor 14 at the server, ceil 15 in an
    # estimate; max_tokens 46 keeps the charge at 2 x usage (60 = 2 x 30).
    token = Workload("token", "Token-bound, reservations 2x usage", **tok,
                     prompt_chars=56, max_tokens=44, tpm=tok_l * 58, contenders=peers_long)
    knife = Workload("token-knife", "Token-bound, estimate one token above the charge",
                     **tok, prompt_chars=58, max_tokens=46, tpm=tok_l * 60,
                     contenders=peers_long)
    shared = [Workload("shared-1s", "4 processes sharing one budget, 1 s window",
                       n=40 if quick else 120, concurrency=2, latency=0.1, window=1.0, rpm=10,
                       processes=4, contenders=SHARED_PEERS, ideal_note=RATE_NOTE)]
    if not quick:
        shared.append(Workload("shared-60s", "4 processes sharing one budget, 60 s window",
                               n=360, concurrency=2, latency=0.2, window=60.0, rpm=120,
                               processes=4, contenders=SHARED_PEERS, ideal_note=RATE_NOTE))
    out = [
        Workload("latency", "Latency-bound", 48 if quick else 256, 16, lat, 60.0,
                 rpm=NO_LIMIT_RPM, contenders=everyone, ideal_note=LATENCY_NOTE),
        Workload("rate-1s", "Rate-bound, limit known, 1 s window", **r1,
                 contenders=everyone, ideal_note=RATE_NOTE),
        Workload("rate-6s", "Rate-bound, limit known, 6 s window", **r6,
                 contenders=peers_long, ideal_note=RATE_NOTE),
        Workload("rate-unknown-6s", "Rate-bound, limit unknown to the client, 6 s window",
                 **r6, client_knows=False, contenders=peers_long,
                 ideal_note=RATE_NOTE),
    ]
    if not quick:
        out += [
            Workload("rate-60s", "Rate-bound, limit known, 60 s window", **r60,
                     contenders=WITH_LIMITER, ideal_note=RATE_NOTE),
            Workload("rate-unknown-60s", "Rate-bound, limit unknown to the client, 60 s window",
                     **r60, client_knows=False, contenders=WITH_LIMITER,
                     ideal_note=RATE_NOTE),
        ]
    token = _with_note(token)
    knife = _with_note(knife)
    out += [token, knife,
            Workload("faulty", "Faulty (5% 500, 2% reset, 1% hang)", 48 if quick else 256, 16,
                     lat, 60.0, rpm=NO_LIMIT_RPM, timeout=1.0, hang_seconds=2.0,
                     fail_rate={"500": 0.05, "reset": 0.02, "hang": 0.01},
                     contenders=peers_long,
                     ideal_note=("fault-free latency-bound ideal, ceil(items / batch_size) x "
                                 "latency; hangs last 2 s against a 1 s client timeout")),
            *shared]
    return out


def _with_note(wl: Workload) -> Workload:
    from dataclasses import replace

    return replace(wl, ideal_note=_token_note(wl))


def section_names() -> list[str]:
    """Every workload name of the full run, in order (``--only`` accepts each)."""
    return [wl.name for wl in workloads(quick=False)]
