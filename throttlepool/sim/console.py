"""What the simulator prints: its banner, its limits, what it served; and `serve`, the
foreground loop of ``throttlepool sim``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from throttlepool.sim.batch_lifecycle import BatchRoute
from throttlepool.sim.config import SimConfig
from throttlepool.sim.server import Simulator


def limits_text(config: SimConfig) -> str:
    """``60 requests and 40,000 tokens per 60 s window, per API key; latency 0.2 s``."""
    budgets = [f"{config.rpm:,} requests" if config.rpm else "",
               f"{config.tpm:,} tokens" if config.tpm else "",
               f"{config.itpm:,} input tokens" if config.itpm else "",
               f"{config.otpm:,} output tokens" if config.otpm else ""]
    shown = " and ".join(b for b in budgets if b)
    limits = (f"{shown} per {config.window:g} s window, "
              f"{'per API key' if config.per_key else 'shared by all keys'}"
              if shown else "no rate limit (--rpm, --tpm, --itpm or --otpm sets one)")
    extra = [f"latency {config.latency:g} s" + (f" +/- {config.jitter:g}" if config.jitter
                                                 else "")]
    if config.first_token_delay or config.chunk_interval:
        extra.append(f"streams: first token after {config.first_token_delay:g} s, "
                     f"then every {config.chunk_interval:g} s")
    if config.fail_rate:
        extra.append("faults " + ", ".join(f"{k}={v:g}" for k, v in sorted(
            config.fail_rate.items())))
    return f"{limits}; {'; '.join(extra)}"


def configure_batches(sim: Simulator, **changes: Any) -> None:
    """Set how every provider's simulated batches behave (the fields of
    :class:`~throttlepool.sim.batch_lifecycle.BatchSimConfig`: ``delay``, ``fail_rate``,
    ``expire_after``, ...), kept across a reset (``POST /__reset``)."""
    for route in sim.state.routes:
        if isinstance(route, BatchRoute):
            route.configure_defaults(**changes)


def batches_text(batches: Mapping[str, Any]) -> str:
    """``batches: answered after 30 s; 10% of requests fail once; expire after 600 s``."""
    parts = [f"answered after {batches.get('delay', 0.2):g} s"]
    if batches.get("fail_rate"):
        parts.append(f"{batches['fail_rate']:.0%} of requests fail once")
    if batches.get("expire_after") is not None:
        parts.append(f"expire after {batches['expire_after']:g} s")
    return "batches: " + "; ".join(parts)


def banner(url: str, config: SimConfig | None = None,
           batches: Mapping[str, Any] | None = None) -> str:
    """The lines `serve` prints: where each SDK should point, and the limits it enforces."""
    lines = [
        f"throttlepool simulator listening on {url}",
        f"  OpenAI base_url:         {url}/v1   (chat/completions, responses, embeddings)",
        f"  Anthropic base_url:      {url}   (POST /v1/messages)",
        f"  Gemini base_url/endpoint: {url}   (google-genai: api_version 'v1' or 'v1beta')",
        f"  requests JSON endpoint:  POST {url}/echo",
        f"  stats: GET {url}/__stats   reset: POST {url}/__reset   "
        f"last requests: GET {url}/__requests",
    ]
    if config is not None:
        lines.append(f"  limits: {limits_text(config)}")
        lines.append(f"  {batches_text(batches or {})}")
        lines.append("  Ctrl-C stops it and prints what it served")
    return "\n".join(lines)


def stats_summary(stats: Mapping[str, Any]) -> str:
    """What a stopped simulator served: requests, answers by status, the busiest window."""
    by_status = ", ".join(f"{n} x {code}" for code, n in stats.get("by_status", {}).items())
    faults = ", ".join(f"{k} {v}" for k, v in stats.get("faults", {}).items())
    return (f"throttlepool simulator served {stats.get('requests', 0)} requests"
            f" ({by_status or 'none answered'}); {stats.get('rate_limited', 0)} rate-limited; "
            f"busiest {stats.get('window', 0):g} s window: "
            f"{stats.get('max_requests_in_window', 0)} requests, "
            f"{stats.get('max_tokens_in_window', 0)} tokens"
            + (f"; faults: {faults}" if faults else ""))


def serve(host: str = "127.0.0.1", port: int = 8080, config: SimConfig | None = None,
          batches: Mapping[str, Any] | None = None) -> None:
    """Run the simulator in the foreground until Ctrl-C, then print what it served.
    ``batches``: how its Batch APIs behave (see :func:`configure_batches`)."""
    sim = Simulator(config, host=host, port=port).start()
    configure_batches(sim, **(batches or {}))
    try:
        # Inside the try: a client may read the banner and send Ctrl-C before this thread
        # gets back from the write (a loaded machine), and that is still a clean stop.
        print(banner(sim.url, sim.config, batches), flush=True)
        sim.state.stop_event.wait()  # set only by stop(); Ctrl-C raises out of wait()
    except KeyboardInterrupt:
        pass
    finally:
        stats = sim.stats()
        sim.stop()
        try:
            print(stats_summary(stats), flush=True)
        except (OSError, ValueError):  # stdout already closed (a pipe whose reader left)
            pass
