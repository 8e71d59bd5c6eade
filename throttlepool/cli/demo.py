"""``throttlepool sim`` (the simulator in the foreground) and ``throttlepool demo``."""

from __future__ import annotations

import importlib
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import click

from ..adapters import Adapter, make_adapter
from ..errors import ConfigError
from ..outcome import Status
from ..runner import ThreadedBatchRunner
from ..sim import SimConfig, Simulator, serve
from .demo_batch import batch_demo
from .progress import CliProgress, duration, failure_name, summary

SIM_EXAMPLES = """\b
Examples:
  throttlepool sim --port 8080 --rpm 60 --latency 0.5
  throttlepool sim --rpm 600 --tpm 100000 --fail-rate 503=0.05 --fail-rate reset=0.01
  throttlepool sim --itpm 40000 --otpm 8000 --first-token-delay 0.3   # Anthropic-style
  # then, in another shell:
  OPENAI_API_KEY=sk-test throttlepool run prompts.jsonl --model sim \\
      --base-url http://127.0.0.1:8080/v1 --rpm 60
"""

DEMO_EXAMPLES = """\b
Examples:
  throttlepool demo
  throttlepool demo --items 500 --rate 100 --latency 0.3 --batch-size 32
  throttlepool demo --provider http --sequential 0   # time all items sequentially too
  throttlepool demo --mode batch --items 100 --batch-delay 3   # online vs Batch API
"""

DEMO_KEY = "sk-demo-not-a-real-key"  # the simulator accepts any key


def _fail_rates(values: tuple[str, ...]) -> dict[str, float]:
    rates: dict[str, float] = {}
    for text in values:
        kind, sep, p = text.partition("=")
        try:
            rates[kind.strip()] = float(p)
        except ValueError:
            sep = ""
        if not sep:
            raise ConfigError(f"--fail-rate expects KIND=PROBABILITY (e.g. 503=0.05), "
                              f"got {text!r}")
    return rates


def sim_config(**fields: Any) -> SimConfig:
    """A SimConfig; its ValueErrors become ConfigErrors (exit code 2)."""
    try:
        return SimConfig(**fields)
    except ValueError as exc:
        raise ConfigError(f"simulator: {exc}") from None


@click.command("sim", epilog=SIM_EXAMPLES)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8080, show_default=True, help="Port to listen on.")
@click.option("--rpm", type=int, help="Requests admitted per window (429 beyond).")
@click.option("--tpm", type=int, help="Tokens admitted per window (429 beyond).")
@click.option("--itpm", type=int,
              help="Input (prompt) tokens admitted per window, apart from output (429 beyond).")
@click.option("--otpm", type=int,
              help="Output (generated) tokens admitted per window (429 beyond).")
@click.option("--window", type=float, default=60.0, show_default=True,
              help="Length of the sliding window in seconds.")
@click.option("--latency", type=float, default=0.0, show_default=True,
              help="Seconds each reply takes.")
@click.option("--jitter", type=float, default=0.0, show_default=True,
              help="Each reply's latency varies by up to this many seconds either way.")
@click.option("--first-token-delay", type=float, default=0.0, show_default=True,
              help="Seconds between a streamed reply's headers and its first event.")
@click.option("--fail-rate", multiple=True, metavar="KIND=P",
              help="Inject faults: 500, 503, 529, reset, hang or break, with probability P. "
                   "Repeatable.")
@click.option("--batch-delay", type=click.FloatRange(min=0), default=0.2, show_default=True,
              metavar="SECONDS", help="Seconds a batch takes from creation to its answers "
              "(the Batch APIs of OpenAI, Anthropic and Gemini).")
@click.option("--batch-fail-rate", type=click.FloatRange(0, 1), default=0.0, metavar="P",
              help="Chance that a batch request fails the first time it is submitted.")
@click.option("--batch-expire", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Seconds after which an unfinished batch expires (the requests it had not "
                   "answered come back expired).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
def sim_command(host: str, port: int, rpm: int | None, tpm: int | None, itpm: int | None,
                otpm: int | None, window: float, latency: float, jitter: float,
                first_token_delay: float, fail_rate: tuple[str, ...], batch_delay: float,
                batch_fail_rate: float, batch_expire: float | None, seed: int) -> int:
    """Serve the rate-limited OpenAI/Anthropic/Gemini-compatible API simulator until Ctrl-C.

    It answers every prompt with "echo: <prompt>", counts tokens, and returns 429s with
    real rate-limit headers when --rpm/--tpm/--itpm/--otpm are exceeded. The banner names
    its limits; Ctrl-C stops it and prints what it served (requests by status, the busiest
    window).
    GET /__requests shows the last requests it received (keys shortened).
    """
    config = sim_config(rpm=rpm, tpm=tpm, itpm=itpm, otpm=otpm, window=window, latency=latency,
                        jitter=jitter, first_token_delay=first_token_delay,
                        fail_rate=_fail_rates(fail_rate), seed=seed)
    batches = {"delay": batch_delay, "fail_rate": batch_fail_rate,
               "expire_after": batch_expire, "seed": seed}
    try:
        serve(host, port, config, batches)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return 0


def _sequential_call(provider: str, sim: Simulator) -> tuple[Callable[[str], str], Any]:
    """A plain one-at-a-time call with the SDK (or requests), as code without throttlepool."""
    if provider == "openai":
        import openai

        client = openai.OpenAI(base_url=sim.openai_base_url, api_key=DEMO_KEY, max_retries=5)

        def ask(prompt: str) -> str:
            reply = client.chat.completions.create(
                model="sim-demo", messages=[{"role": "user", "content": prompt}])
            return str(reply.choices[0].message.content)

        return ask, client
    import requests

    session = requests.Session()

    def post(prompt: str) -> str:
        for _ in range(10):
            response = session.post(f"{sim.url}/echo", json={"prompt": prompt}, timeout=30)
            if response.status_code == 429:  # a plain loop's usual retry: sleep and repeat
                time.sleep(float(response.headers.get("retry-after", "1")))
                continue
            response.raise_for_status()
            return str(response.json()["result"])
        response.raise_for_status()
        return ""

    return post, session


def _has_openai() -> bool:
    """Whether the openai SDK imports (a base install has only requests)."""
    try:
        importlib.import_module("openai")
    except ImportError:
        return False
    return True


def _batched_adapter(provider: str, sim: Simulator) -> Adapter[Any]:
    if provider == "openai":
        return make_adapter("openai", base_url=sim.openai_base_url, api_key=DEMO_KEY,
                            model="sim-demo", extract="text")
    return make_adapter("http", url=f"{sim.url}/echo", extract="result")


@click.command("demo", epilog=DEMO_EXAMPLES)
@click.option("--items", default=300, show_default=True, help="Prompts to run.")
@click.option("--sequential", default=25, show_default=True,
              help="Prompts timed one at a time and extrapolated to --items (0 = all).")
@click.option("--rate", default=50.0, show_default=True,
              help="Requests per second the simulator allows (and the runner is told).")
@click.option("--latency", default=0.2, show_default=True, help="Seconds per reply.")
@click.option("-b", "--batch-size", default=16, show_default=True, help="Calls in flight: "
              "more than run's default 8, since filling --rate 50/s at --latency 0.2 s "
              "takes 10 (rate x latency).")
@click.option("--provider", type=click.Choice(["auto", "openai", "http"]), default="auto",
              show_default=True, help="openai SDK if installed, else http (requests).")
@click.option("--db", metavar="PATH", help="Checkpoint database. [default: in the temp dir]")
@click.option("--progress/--no-progress", default=True, help="Show the progress bar.")
@click.option("--mode", type=click.Choice(["online", "batch"]), default="online",
              show_default=True, help="batch: run the prompts online and then through the "
              "simulated OpenAI Batch API, and compare wall time and cost (needs openai).")
@click.option("--batch-delay", default=3.0, show_default=True,
              help="--mode batch: seconds a simulated batch takes to complete.")
def demo_command(items: int, sequential: int, rate: float, latency: float, batch_size: int,
                 provider: str, db: str | None, progress: bool, mode: str,
                 batch_delay: float) -> int:
    """Batch a few hundred prompts against the built-in simulator; no API key needed.

    The simulator starts in this process with a rate limit and a latency. The same prompts
    run first one at a time (a plain loop, the way code without throttlepool does it),
    then through the runner with --batch-size calls in flight under the limit.

    With --mode batch they run through the runner online, then as a provider batch at the
    batch price (the simulated batch takes --batch-delay seconds), side by side.
    """
    if items < 1 or rate <= 0 or latency < 0 or batch_size < 1 or sequential < 0:
        raise ConfigError("--items, --rate and --batch-size must be positive, "
                          "--latency and --sequential >= 0")
    if mode == "batch" and (provider == "http" or not _has_openai()):
        raise ConfigError("demo --mode batch runs the OpenAI Batch API through the openai "
                          "SDK: install openai (pip install 'throttlepool[openai]') and "
                          "leave --provider at auto or openai")
    if batch_delay < 0:
        raise ConfigError("--batch-delay must be >= 0")
    if provider == "auto":
        provider = "openai" if _has_openai() else "http"
    db = db or os.path.join(tempfile.gettempdir(), "throttlepool-demo.db")
    rpm_rate = max(1, int(rate))
    config = sim_config(rpm=rpm_rate, window=1.0, latency=latency, jitter=latency / 4)
    prompts = [f"question {i}: what is {i} squared?" for i in range(items)]
    seq_n = min(items, sequential) if sequential else items
    echo = click.echo
    with Simulator(config) as sim:
        echo(f"simulator at {sim.url}: {rpm_rate} requests/second, "
             f"{latency:g}s latency (+ up to {latency / 4:g}s jitter); provider {provider}")
        if mode == "batch":
            return batch_demo(sim, prompts, key=DEMO_KEY, rate=rate, batch_size=batch_size,
                              batch_delay=batch_delay, db=db, progress=progress)
        ask, client = _sequential_call(provider, sim)
        echo(f"1) sequential: {seq_n} prompts one at a time...")
        start = time.monotonic()
        for prompt in prompts[:seq_n]:
            ask(prompt)
        seq_time = time.monotonic() - start
        client.close()
        seq_total = seq_time * items / seq_n
        if seq_n < items:
            echo(f"   {seq_n} prompts took {duration(seq_time)}; extrapolated to {items}: "
                 f"~{duration(seq_total)} (measured on {seq_n}, not run in full)")
        else:
            echo(f"   {items} prompts took {duration(seq_time)}")
        sim.reset()
        echo(f"2) batched: {items} prompts, {batch_size} in flight, limit {rate:g}/second...")
        sink = CliProgress(CliProgress.auto_mode(progress), rpm=rpm_rate * 60.0, desc="demo")
        run_name = f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        adapter = _batched_adapter(provider, sim)
        with ThreadedBatchRunner(adapter, batch_size=batch_size, limits=[f"{rate:g}/second"],
                                 progress=sink, store=db, run_name=run_name) as runner:
            result = runner.run(prompts)
        server = sim.stats()
    failures: Counter[str] = Counter()
    wrong = 0
    for outcome in result:
        name = failure_name(outcome)
        if name is not None:
            failures[name] += 1
        elif outcome.status is Status.OK and outcome.value != "echo: " + outcome.item:
            wrong += 1
    for line in summary(result.stats, failures, total=items):
        echo(f"   {line}")
    wall = result.stats.wall_time
    speedup = seq_total / wall if wall > 0 else float("inf")
    ideal = max(items / rate, items * latency / batch_size)
    echo(f"   server saw {server['requests']} requests, {server['rate_limited']} answered 429")
    echo(f"speedup: {speedup:.1f}x ({duration(seq_total)} sequential"
         f"{' (extrapolated)' if seq_n < items else ''} -> {duration(wall)} batched; "
         f"the limit and latency allow {duration(ideal)} at best)")
    echo(f"checkpoint: {db} (run {run_name})")
    echo(f"  throttlepool status {run_name} --db {db}")
    echo(f"  throttlepool export {run_name} --db {db} --format csv")
    if wrong:
        echo(f"{wrong} replies did not match their prompts", err=True)
    return 0 if result.all_succeeded and not wrong else 1
