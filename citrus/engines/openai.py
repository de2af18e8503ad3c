"""Any OpenAI-compatible chat-completions server: vLLM's, a hosted API, a local gateway.

- bounded concurrency (engine.concurrency requests in flight);
- retries with exponential backoff and jitter on 429, 5xx, timeouts, dropped connections and
  malformed bodies, honouring Retry-After; other 4xx fail at once;
- an append-only on-disk cache keyed by the request, so a rerun or a resumed job never pays
  twice for a finished request;
- the API key only from the environment variable named by engine.api_key_env; it is sent in a
  header and never logged or written.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from citrus.config import EngineConfig
from citrus.errors import ConfigError, EngineError

log = logging.getLogger(__name__)
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass
class OpenAISettings(EngineConfig):
    base_url: str | None = None  # the server's /v1 URL, e.g. http://127.0.0.1:8000/v1
    served_model: str | None = None  # the model name the server knows; null: model.path
    api_key_env: str | None = "OPENAI_API_KEY"  # the *name* of the variable holding the key
    concurrency: int = 8  # requests in flight
    max_retries: int = 6  # on 429 / 5xx / timeouts / dropped connections / malformed bodies
    timeout_s: float = 120.0
    backoff_s: float = 0.5  # first retry delay, doubled each retry
    max_backoff_s: float = 30.0
    cache_path: str | None = None  # JSONL of finished requests; null: no cache


class ResponseCache:
    """request hash -> reply, appended to a JSONL file as replies arrive."""

    def __init__(self, path: Path | None):
        self.path, self.entries = path, {}
        if path and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self.entries[entry["key"]] = entry["reply"]
                except (json.JSONDecodeError, KeyError):
                    continue  # a line cut short by a crash: that request is simply asked again

    @staticmethod
    def key(request: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()

    def put(self, key: str, reply: str) -> None:
        self.entries[key] = reply
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"key": key, "reply": reply}, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())


class OpenAIEngine:
    Settings = OpenAISettings

    def __init__(self, engine_cfg: Any, model_cfg: Any):
        if not engine_cfg.base_url:
            raise ConfigError(
                "engine.base_url: set the server's URL, e.g. http://127.0.0.1:8000/v1"
            )
        self.cfg = engine_cfg
        self.model = engine_cfg.served_model or str(model_cfg.path)
        self.api_key = os.environ.get(engine_cfg.api_key_env, "") if engine_cfg.api_key_env else ""
        self.cache = ResponseCache(Path(engine_cfg.cache_path) if engine_cfg.cache_path else None)
        self.stats = {
            "requests": 0,
            "retries": 0,
            "cached": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
        }

    def request_body(
        self, conversation: list[dict[str, str]], seed: int | None = None
    ) -> dict[str, Any]:
        body = {
            "model": self.model,
            "messages": conversation,
            "max_tokens": self.cfg.max_new_tokens,
            "temperature": self.cfg.temperature,
            "top_p": self.cfg.top_p,
        }
        if self.cfg.temperature > 0 or seed is not None:
            body["seed"] = (
                self.cfg.seed if seed is None else seed
            )  # also keeps samples apart in the cache
        return body

    def generate(
        self,
        conversations: list[list[dict[str, str]]],
        on_batch: Callable[[list[int], list[str]], None] | None = None,
        seeds: list[int] | None = None,
    ) -> list[str]:
        """Replies in input order; `on_batch([i], [reply])` fires as each one arrives."""
        return asyncio.run(self._generate_all(conversations, on_batch, seeds))

    def stream(self, conversation: list[dict[str, str]]) -> Iterator[str]:
        """One reply as server-sent events arrive (for `citrus chat`; interactive, so no retries
        and no cache)."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {**self.request_body(conversation), "stream": True}
        with (
            httpx.Client(
                base_url=self.cfg.base_url.rstrip("/"), headers=headers, timeout=self.cfg.timeout_s
            ) as client,
            client.stream("POST", "/chat/completions", json=body) as response,
        ):
            if response.status_code >= 400:
                response.read()
                raise EngineError(
                    f"{self.cfg.base_url}: HTTP {response.status_code}: {response.text[:300]}"
                )
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    break
                try:
                    piece = json.loads(data)["choices"][0].get("delta", {}).get("content")
                except (json.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
                    raise EngineError(
                        f"{self.cfg.base_url}: malformed stream event {data[:200]!r}"
                    ) from None
                if piece:
                    yield piece

    async def _generate_all(self, conversations, on_batch, seeds) -> list[str]:
        replies: list[str | None] = [None] * len(conversations)
        limit = asyncio.Semaphore(self.cfg.concurrency)
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        timeout = httpx.Timeout(self.cfg.timeout_s)
        async with httpx.AsyncClient(
            base_url=self.cfg.base_url.rstrip("/"), headers=headers, timeout=timeout
        ) as client:

            async def one(i: int) -> None:
                body = self.request_body(conversations[i], seeds[i] if seeds else None)
                key = ResponseCache.key(body)
                if key in self.cache.entries:
                    self.stats["cached"] += 1
                    reply = self.cache.entries[key]
                else:
                    async with limit:
                        reply = await self._post(client, body)
                    self.cache.put(key, reply)
                replies[i] = reply
                if on_batch:
                    on_batch([i], [reply])

            await asyncio.gather(*(one(i) for i in range(len(conversations))))
        return replies  # type: ignore[return-value]

    async def _post(self, client: httpx.AsyncClient, body: dict[str, Any]) -> str:
        problem, retry_after = "", None
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                self.stats["retries"] += 1
                await asyncio.sleep(self._backoff(attempt, retry_after))
            self.stats["requests"] += 1
            try:
                response = await client.post("/chat/completions", json=body)
            except (httpx.TimeoutException, httpx.TransportError) as e:
                problem, retry_after = type(e).__name__, None
                continue
            if response.status_code in RETRY_STATUS:
                problem, retry_after = (
                    f"HTTP {response.status_code}",
                    response.headers.get("retry-after"),
                )
                continue
            if response.status_code >= 400:
                raise EngineError(
                    f"{self.cfg.base_url}: HTTP {response.status_code}: {response.text[:300]}"
                )
            try:
                payload = response.json()
                reply = payload["choices"][0]["message"]["content"] or ""
            except (json.JSONDecodeError, KeyError, IndexError, TypeError):
                problem, retry_after = "malformed body", None
                continue
            usage = payload.get("usage") or {}
            self.stats["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
            self.stats["completion_tokens"] += int(usage.get("completion_tokens") or 0)
            return reply
        raise EngineError(
            f"{self.cfg.base_url}: gave up after {self.cfg.max_retries} retries (last: {problem})"
        )

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        """The server's Retry-After when it sends seconds; else exponential, with jitter so
        retrying clients spread out."""
        try:
            return min(float(retry_after), self.cfg.max_backoff_s)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            base = min(self.cfg.backoff_s * 2 ** (attempt - 1), self.cfg.max_backoff_s)
            return base * (0.5 + random.random() / 2)
