"""Structured output: the model's answer parsed as JSON, and checked against a schema.

``extract="json"`` on an adapter that knows the answer's text (openai, anthropic, gemini)
parses that text: the whole of it, or the body of a ```` ```json ```` fence, or the first JSON
object or array in prose around it ("Here it is: {...}"). ``schema=`` checks the parsed value
against a JSON Schema (a dict, validated with ``jsonschema``) or a pydantic model (the value
becomes an instance of it). A failure raises :class:`InvalidAnswer`, which adapters classify
as ``ErrorKind.INVALID_OUTPUT``: the runner asks again up to ``json_retries`` times, on a
budget apart from the network retries, then records the error, which names what was wrong.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from ..classify import ErrorKind, Verdict
from ..errors import ConfigError, ItemError
from ..outcome import Usage
from .tokens import usage_from

#: Asks for a malformed or mismatched answer before the item fails (apart from network retries).
DEFAULT_JSON_RETRIES = 2
_FENCE = re.compile(r"```[ \t]*(?:json[c5]?|JSON)?[ \t]*\r?\n(.*?)```", re.DOTALL)
_SHOWN = 80  # characters of a bad answer quoted in the error

Schema = Mapping[str, Any] | type
log = logging.getLogger(__name__)


class InvalidAnswer(ItemError):
    """The model answered, but not with the JSON asked for; ``problem`` says what was wrong.

    ``usage``: what the server reported for the rejected answer, which it billed (None when
    unknown); the runner counts it in the run's tokens and cost.
    """

    usage: Usage | None = None

    def __init__(self, problem: str, text: str | None = None) -> None:
        shown = ""
        if text is not None:
            short = text if len(text) <= _SHOWN else text[:_SHOWN] + "..."
            shown = f" (answer: {short!r})"
        super().__init__(f"invalid JSON answer: {problem}{shown}")
        self.problem = problem
        self.text = text

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from what it was made of: the default (the message as the one argument)
        # prefixed "invalid JSON answer: " twice on the driver of a Dask run.
        return (type(self), (self.problem, self.text), self.__dict__)


def classify_answer(exc: BaseException) -> Verdict | None:
    """INVALID_OUTPUT for an :class:`InvalidAnswer`, else None."""
    if isinstance(exc, InvalidAnswer):
        return Verdict(ErrorKind.INVALID_OUTPUT, None, exc.problem)
    return None


def _decode_first(text: str) -> Any:
    """The first JSON object or array in ``text``; one that ends the text wins."""
    decoder = json.JSONDecoder()
    found: list[Any] = []
    for match in re.finditer(r"[{\[]", text):
        try:
            value, end = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if not text[end:].strip():
            return value
        found.append(value)
    if found:
        return found[0]
    raise ValueError("no JSON object or array in it")


def parse_json_answer(text: Any) -> Any:
    """The JSON value in a model's answer text; :class:`InvalidAnswer` when there is none."""
    if not isinstance(text, str):
        raise InvalidAnswer(f"the answer has no text (got {type(text).__name__})")
    body = text.strip()
    if not body:
        raise InvalidAnswer("the answer is empty", text)
    fence = _FENCE.search(body)
    if fence is not None:
        body = fence.group(1).strip()
    try:
        return json.loads(body)
    except ValueError as exc:
        first_error = exc
    try:
        return _decode_first(body)
    except ValueError:
        raise InvalidAnswer(f"not JSON: {first_error}", text) from None


def _path(parts: Any) -> str:
    shown = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)
    return shown.lstrip(".") or "(the whole answer)"


def _json_schema_validator(schema: Mapping[str, Any]) -> Callable[[Any], Any]:
    try:
        import jsonschema  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ConfigError("a JSON Schema needs jsonschema: pip install jsonschema "
                          "(or pass a pydantic model)") from exc
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ConfigError(f"the schema is not a valid JSON Schema: {exc.message}") from None
    validator = cls(schema)

    def validate(value: Any) -> Any:
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if error is not None:
            raise InvalidAnswer(f"schema mismatch at {_path(error.absolute_path)}: "
                                f"{error.message}")
        return value

    return validate


def _pydantic_validator(model: type) -> Callable[[Any], Any]:
    import pydantic

    adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(model)

    def validate(value: Any) -> Any:
        try:
            return adapter.validate_python(value)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise InvalidAnswer(f"{model.__name__} mismatch at {_path(first['loc'])}: "
                                f"{first['msg']}{more}") from None

    return validate


def validator_for(schema: Schema | None) -> Callable[[Any], Any] | None:
    """A function checking a parsed value against ``schema`` (returning the final value)."""
    if schema is None:
        return None
    if isinstance(schema, Mapping):
        return _json_schema_validator(schema)
    if isinstance(schema, type) and callable(getattr(schema, "model_validate", None)):
        return _pydantic_validator(schema)
    raise ConfigError(f"schema must be a JSON Schema (a dict) or a pydantic model class, "
                      f"got {type(schema).__name__}")


class JsonAnswer:
    """The extractor of ``extract="json"``: the response's text, parsed, then validated; a
    rejected answer's :class:`InvalidAnswer` carries the response's usage (``usage_of``).

    :meth:`revive` turns a value stored as JSON (the checkpoint, the answer cache) back into
    what the call returned: the pydantic model's instance, where ``schema`` is one.
    """

    def __init__(self, text_of: Callable[[Any], Any], schema: Schema | None = None,
                 usage_of: Callable[[Any], Usage | None] = usage_from) -> None:
        self.text_of = text_of
        self.usage_of = usage_of
        self.validate = validator_for(schema)
        self.model = schema if isinstance(schema, type) else None

    def __call__(self, response: Any) -> Any:
        try:
            value = parse_json_answer(self.text_of(response))
            return self.validate(value) if self.validate is not None else value
        except InvalidAnswer as exc:
            exc.usage = self.usage_of(response)
            raise

    def revive(self, stored: Any) -> Any:
        """``stored`` validated into the model again; as stored when there is no model or it
        no longer validates (a recorded answer is never lost: the model may have changed)."""
        if self.model is None or self.validate is None or isinstance(stored, self.model):
            return stored
        try:
            return self.validate(stored)
        except InvalidAnswer as exc:
            log.warning("a stored answer is kept as JSON: %s", exc)
            return stored


def json_answer(text_of: Callable[[Any], Any], schema: Schema | None = None,
                usage_of: Callable[[Any], Usage | None] = usage_from) -> JsonAnswer:
    """The extractor of ``extract="json"`` (a :class:`JsonAnswer`)."""
    return JsonAnswer(text_of, schema, usage_of)


def revive_extracted(extract: Callable[[Any], Any] | None, stored: Any) -> Any:
    """``stored`` as ``extract`` (an adapter's resolved ``extract=``) returned it: a
    ``schema=`` model's instance again; anything else as stored. Adapters'
    :meth:`~throttlepool.adapters.base.Adapter.revive` is this of their extractor."""
    return extract.revive(stored) if isinstance(extract, JsonAnswer) else stored


def stored_value_reviver(adapter: Any) -> Callable[[Any], Any] | None:
    """The adapter's public :meth:`~throttlepool.adapters.base.Adapter.revive`, or None
    for an adapter without one (its stored values come back as stored)."""
    revive = getattr(adapter, "revive", None)
    return revive if callable(revive) else None


def check_json_retries(json_retries: int) -> int:
    """``json_retries`` as given, or a ConfigError naming it."""
    if isinstance(json_retries, bool) or not isinstance(json_retries, int) or json_retries < 0:
        raise ConfigError(f"json_retries must be an int >= 0, got {json_retries!r}")
    return json_retries
