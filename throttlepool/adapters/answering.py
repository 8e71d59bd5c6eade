"""The part the SDK adapters that read a model's answer (openai, anthropic, google-genai)
share: their client, the value a response gives, and a stored value revived."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import Adapter
from .portable import SdkClient
from .structured import revive_extracted
from .warm import warm


class AnsweringSdkAdapter(Adapter[Any]):
    """Base of an SDK adapter with a portable client (``_client``) and an extractor."""

    _client: SdkClient
    method: str
    _extract: Callable[[Any], Any] | None

    @property
    def client(self) -> Any:
        """The SDK client calls are made with (its own retries off; batch mode makes its
        own calls with it)."""
        return self._client.get()

    def _sdk_models(self, client: Any) -> list[Any]:
        """Annotations naming the SDK's pydantic models that a call with ``client`` uses."""
        return []

    def _warm(self, client: Any) -> None:
        """Build those models once per process, before concurrent calls race to build them
        (:mod:`throttlepool.adapters.warm`): at construction, and in each process's first
        call (a Dask worker unpickles the adapter, so its ``__init__`` never ran there)."""
        warm((type(self), self.method), lambda: self._sdk_models(client))

    def value_of(self, response: Any) -> Any:
        """What an online call returns for ``response``: the adapter's ``extract`` of it."""
        return self._extract(response) if self._extract is not None else response

    def revive(self, stored: Any) -> Any:
        """A stored value as a call returns it: a ``schema=`` pydantic model's instance."""
        return revive_extracted(self._extract, stored)
