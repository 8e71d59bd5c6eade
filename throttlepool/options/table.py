"""Every setting a flag, an environment variable or a config file may give, listed once.

An :class:`Option` says how its value is parsed, its default, its help text and, for a run
option, which field of which value object it sets (``target``). ``config.PARSERS`` and
``config.DEFAULTS``, the ``throttlepool run`` flags and the keywords the CLI passes to the
library are all derived from :data:`OPTIONS`. Adding a setting is one entry here plus its
use (and, for a run option, one field of its value object).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._inputs import FORMATS
from .parse import (
    Parser,
    boolean,
    limit_specs,
    limiter_url,
    non_negative_float,
    non_negative_int,
    params,
    positive_float,
    positive_int,
    scheduler_address,
    text,
    text_list,
)
from .values import BATCH, DEFAULT_BATCH_SIZE, ONLINE

#: In a help text, replaced by the CLI with the names of the providers it knows.
PROVIDERS_MARK = "<PROVIDERS>"


@dataclass(frozen=True)
class Option:
    """One setting: its parser, default, help and (for a run option) the field it sets.

    ``target`` is ``"limits.rpm"``-style (a field of a value object, see
    :class:`~throttlepool.options.RunOptions`) or None for a setting of the CLI itself (the
    provider, the input, the output). ``short`` is the flag's one-letter form, ``negative``
    the off-switch of a boolean flag (``--no-progress``), ``metavar`` how the help names the
    value, ``choices`` the values it accepts.
    """

    name: str
    parse: Parser
    help: str
    default: Any = None
    target: str | None = None
    short: str | None = None
    negative: str | None = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        """``--batch-size`` for ``batch_size``."""
        return "--" + self.name.replace("_", "-")

    @property
    def keyword(self) -> str | None:
        """The library keyword this option sets (``rpm`` for ``limits.rpm``), or None."""
        return None if self.target is None else self.target.rpartition(".")[2]

    @property
    def repeatable(self) -> bool:
        """Whether the flag may be given several times."""
        return self.parse in (text_list, params, limit_specs)


OPTIONS: tuple[Option, ...] = (
    Option("provider", text, f"API to call: {PROVIDERS_MARK}. [default: openai]",
           default="openai", short="-P", metavar="NAME"),
    Option("model", text, "Model name sent with every request.", short="-m"),
    Option("system", text, "System prompt for every request (openai: a system message; "
           "anthropic: the top-level system field; gemini: system_instruction; http: the "
           "body's \"system\").", metavar="TEXT"),
    Option("temperature", non_negative_float, "Sampling temperature of every request."),
    Option("max_tokens", positive_int, "Output tokens at most per request (openai/anthropic/"
           "http: max_tokens, which anthropic requires, default 1024; gemini: "
           "max_output_tokens). Under --tpm a request without it reserves 256.",
           metavar="N"),
    Option("param", params, "Any field of the request body (gemini: of its config), "
           "repeatable; VALUE is JSON when it parses, else text; a dotted NAME nests: -p "
           "top_p=0.9 -p response_format.type=json_object", short="-p", metavar="NAME=VALUE"),
    Option("api_key", text, "API key, instead of the provider's environment variable (http: "
           "sent as 'Authorization: Bearer KEY'). Prefer the variable: a flag is visible to "
           "other users in the process list.", metavar="KEY"),
    Option("header", text_list, "HTTP header for --provider http, repeatable.",
           metavar="'NAME: VALUE'"),
    Option("batch_size", positive_int, "Calls in flight at most. [default: 8]",
           default=DEFAULT_BATCH_SIZE, target="execution.batch_size", short="-b"),
    Option("rpm", positive_float, "Requests per minute allowed (exact sliding window).",
           target="limits.rpm"),
    Option("tpm", positive_float, "Tokens per minute allowed (prompt + max output).",
           target="limits.tpm"),
    Option("itpm", positive_float, "Input (prompt) tokens per minute allowed, counted apart "
           "from output tokens (Anthropic's ITPM).", target="limits.itpm"),
    Option("otpm", positive_float, "Output tokens per minute allowed (Anthropic's OTPM; "
           "reserves max tokens, settled to the answer's).", target="limits.otpm"),
    Option("rate_limit", limit_specs, "A limit in the library's own words, repeatable, "
           "adding to --rpm/--tpm/--itpm/--otpm: '16/second', '500/10s', '400000 input "
           "tokens/minute', '80000 output tokens/minute'. Use the server's own window: "
           "against a 1 s window, --rpm 960 still lets bursts through, --rate-limit "
           "16/second does not.",
           target="limits.limits", metavar="SPEC"),
    Option("retries", non_negative_int, "Retries per item after the first attempt. "
           "[default: 3]", default=3, target="retry.retries"),
    Option("timeout", positive_float, "Seconds one call may take.",
           target="execution.timeout"),
    Option("mode", text, "online: one call per item under the limits; batch: through the "
           "provider's Batch API (openai, anthropic, gemini), at half the price, answered "
           "within hours; same checkpoint, resume and output. [default: online]",
           target="budget.mode", choices=(ONLINE, BATCH)),
    Option("poll_interval", positive_float, "--mode batch: seconds between two polls of the "
           "provider's batches. [default: 30]", default=30.0, metavar="SECONDS"),
    Option("fallback", text, "--mode batch: requests whose batches all failed retryably "
           "(expired, cancelled, 5xx; --retries + 1 batches) are recorded failed (none) or "
           "called one by one under the limits, at the online price (online). "
           "[default: none]", default="none", choices=("none", "online")),
    Option("max_cost", non_negative_float, "Stop sending before the projected spend (USD) "
           "would pass this cap; the run stops as 'budget reached' and resumes with a higher "
           "cap. Needs a known price (the table's, or --price-in/--price-out).",
           target="budget.max_cost", metavar="USD"),
    Option("price_in", non_negative_float, "Input price, USD per million tokens, instead of "
           "the price table's: the list (online) price, which --mode batch halves. "
           "[default: the table's for the model]", target="budget.price_in", metavar="USD"),
    Option("price_out", non_negative_float, "Output price, USD per million tokens, instead "
           "of the price table's: the list (online) price, which --mode batch halves.",
           target="budget.price_out", metavar="USD"),
    Option("db", text, "Checkpoint database; a rerun with the same run name resumes from it. "
           "[default: throttlepool.db]", default="throttlepool.db", metavar="PATH"),
    Option("db_timeout", positive_float, "Seconds to wait for a locked checkpoint database. "
           "[default: 10]", default=10.0),
    Option("run_name", text, "Name of the run in the checkpoint. [default: the input's file "
           "name and a hash of its path (stdin: of its content)]",
           target="checkpoint.run_name"),
    Option("reuse", boolean, "Take the answer of any request already answered ok in the "
           "checkpoint database (any run), so a new run name or an edited input calls only "
           "new requests. [default: off]", negative="--no-reuse"),
    Option("output", text, "Results file, JSONL or CSV by its extension, in input order. "
           "[default: stdout]", short="-o", metavar="PATH"),
    Option("limit", non_negative_int, "Only the first N records.", metavar="N"),
    Option("max_record_size", positive_int, "Refuse a record whose request text is larger, "
           "before any call. [default: 1000000]", metavar="BYTES"),
    Option("progress", boolean, "Progress on stderr: a bar on a terminal, periodic lines "
           "otherwise. [default: on]", default=True, negative="--no-progress"),
    Option("template", text, "Prompt template filled from each record's fields, e.g. "
           "'Title: {title}'. Text lines are {text}."),
    Option("column", text, "CSV column holding the prompt. [default: prompt, or the only "
           "column]"),
    Option("field", text, "JSONL field holding the prompt; records without it are full "
           "request bodies. [default: prompt]", default="prompt"),
    Option("input_format", text, "Input format. [default: by extension; stdin is sniffed]",
           choices=FORMATS),
    Option("extract", text, "What to keep of each reply: text (the answer's text), json (the "
           "model's answer parsed as JSON: openai/anthropic/gemini), response (the whole "
           "response object), raw, or an adapter's named field (http: result). [default: text; "
           "http/python: raw]"),
    Option("schema", text, "JSON Schema file each answer must match (openai/anthropic/gemini); "
           "implies --extract json. A mismatch is asked again (--json-retries), then fails the "
           "item naming the field.", metavar="FILE"),
    Option("json_retries", non_negative_int, "Times a malformed or mismatched JSON answer is "
           "asked again, apart from --retries (--extract json, --schema). [default: 2]",
           metavar="N"),
    Option("stream", boolean, "Stream each reply (openai, anthropic, gemini): read whole on the "
           "worker, same value as without, time to first token recorded. [default: off]",
           default=False, negative="--no-stream"),
    Option("base_url", text, "API base URL (e.g. the simulator's); for --provider http the "
           "endpoint URL."),
    Option("skip_bad_records", boolean, "Record a bad input record as a failed item instead "
           "of stopping before any call. [default: stop]", default=False,
           negative="--stop-on-bad-records"),
    Option("limiter_url", limiter_url, "Share the rate limit with other processes or machines: "
           "sqlite:///path or redis://host:6379/0.", target="limits.limiter_url",
           metavar="URL"),
    Option("dask_scheduler", scheduler_address, "Run on a Dask cluster (tcp://host:8786); needs "
           "--limiter-url redis://... so workers share the limit.",
           target="execution.scheduler", metavar="ADDRESS"),
)

BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}


def library_kwargs(values: Mapping[str, Any]) -> dict[str, Any]:
    """The run options among resolved settings, as library keywords (``rpm=``, ``timeout=``);
    unset ones are left out, so the library's own defaults hold."""
    return {option.keyword: values[option.name] for option in OPTIONS
            if option.keyword is not None and values.get(option.name) is not None}
