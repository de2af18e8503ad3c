"""Any OpenAI-compatible chat-completions server: vLLM's, a hosted API, a local gateway.

The transport is the official `openai` SDK (`AsyncOpenAI` for batches, `OpenAI` for `stream`);
on top of it the engine guarantees:

- bounded concurrency (engine.concurrency requests in flight);
- retries with exponential backoff and jitter on 408/409/425/429 and 5xx, timeouts, dropped
  connections and malformed or truncated 200 bodies, honouring Retry-After; other 4xx fail at
  once. The SDK's own retries are off (max_retries=0), so stats count every HTTP attempt
  (`requests`) and every retry (`retries`) exactly;
- every failure for good is an `EngineError` naming the problem, never an `openai` exception;
- an append-only on-disk cache keyed by the request, the endpoint and a fingerprint of the
  weights at model.path, so a rerun or a resumed job never pays twice for a finished request
  and a fine-tune served under its base model's name never gets the base model's replies;
- the API key only from the environment variable named by engine.api_key_env; it is sent in a
  header and never logged or written. Without one, no Authorization header is sent at all;
- usage per engine in `stats`: tokens, and `truncated` replies (finish_reason "length").
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai

from citrus.config import EngineConfig
from citrus.engines import Conversation, OnBatch
from citrus.errors import ConfigError, EngineError
from citrus.models import weights_fingerprint

RETRY_STATUS = {408, 409, 425, 429}  # and every 5xx


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
    # send max_new_tokens as max_completion_tokens (OpenAI's reasoning models want it) rather
    # than max_tokens (what vLLM and most servers read)
    max_completion_tokens: bool = False


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


class Retry(Exception):
    """An attempt that failed in a way worth retrying, with the server's Retry-After if any."""

    def __init__(self, problem: str, retry_after: str | None = None):
        super().__init__(problem)
        self.problem, self.retry_after = problem, retry_after


class OpenAIEngine:
    Settings = OpenAISettings

    def __init__(self, engine_cfg: Any, model_cfg: Any):
        if not engine_cfg.base_url:
            raise ConfigError(
                "engine.base_url: set the server's URL, e.g. http://127.0.0.1:8000/v1"
            )
        self.cfg = engine_cfg
        self.model = engine_cfg.served_model or str(model_cfg.path)
        # what a cached reply depends on besides the request: the server, and the weights behind
        # the served name (a fine-tune served under its base model's name is another model)
        self.cache_scope = {
            "endpoint": engine_cfg.base_url.rstrip("/"),
            "weights": weights_fingerprint(str(model_cfg.path)),
        }
        self.api_key = os.environ.get(engine_cfg.api_key_env, "") if engine_cfg.api_key_env else ""
        self.cache = ResponseCache(Path(engine_cfg.cache_path) if engine_cfg.cache_path else None)
        self.stats = dict.fromkeys(
            ("requests", "retries", "cached", "prompt_tokens", "completion_tokens", "truncated"), 0
        )

    def request_body(self, conversation: Conversation, seed: int | None = None) -> dict[str, Any]:
        new_name = getattr(self.cfg, "max_completion_tokens", False)  # OpenAI's reasoning models
        limit = "max_completion_tokens" if new_name else "max_tokens"
        body = {
            "model": self.model,
            "messages": conversation,
            limit: self.cfg.max_new_tokens,
            "temperature": self.cfg.temperature,
            "top_p": self.cfg.top_p,
        }
        if self.cfg.temperature > 0 or seed is not None:
            # the seed also keeps samples apart in the cache
            body["seed"] = self.cfg.seed if seed is None else seed
        return body

    def generate(
        self,
        conversations: list[Conversation],
        on_batch: OnBatch | None = None,
        seeds: list[int] | None = None,
    ) -> list[str]:
        """Replies in input order; `on_batch([i], [reply])` fires as each one arrives."""
        return asyncio.run(self._generate_all(conversations, on_batch, seeds))

    def stream(self, conversation: Conversation) -> Iterator[str]:
        """One reply as server-sent events arrive (for `citrus chat`; interactive, so no retries
        and no cache)."""
        body = {**self.request_body(conversation), "stream": True}
        malformed = EngineError(f"{self.cfg.base_url}: malformed stream event")
        try:
            with (
                openai.OpenAI(**self._client_options()) as client,
                client.chat.completions.create(**body, extra_headers=self._headers()) as events,
            ):
                for chunk in events:  # choices empty: a usage chunk; missing: not a chat chunk
                    if chunk.choices is None:
                        raise malformed
                    if chunk.choices and (piece := chunk.choices[0].delta.content):
                        yield piece
        except openai.APIStatusError as e:
            raise EngineError(self._status_message(e)) from None
        except openai.OpenAIError as e:  # a dropped connection included
            raise EngineError(f"{self.cfg.base_url}: {type(e).__name__}: {e}") from None
        except (json.JSONDecodeError, AttributeError, TypeError):
            raise malformed from None

    def _client_options(self) -> dict[str, Any]:
        """The SDK client's settings: its retries off (ours count and back off), and a
        placeholder key where there is none (the SDK wants one; `_headers` keeps it unsent)."""
        return {
            "base_url": self.cfg.base_url,
            "api_key": self.api_key or "EMPTY",
            "timeout": self.cfg.timeout_s,
            "max_retries": 0,
        }

    def _headers(self) -> dict[str, Any]:  # per request: the SDK honours omit only there
        return {} if self.api_key else {"Authorization": openai.Omit()}

    async def _generate_all(self, conversations, on_batch, seeds) -> list[str]:
        replies: list[str | None] = [None] * len(conversations)
        limit = asyncio.Semaphore(self.cfg.concurrency)
        # one request per distinct body: identical ones in a call share it, as the cache would
        in_flight: dict[str, asyncio.Future] = {}
        async with openai.AsyncOpenAI(**self._client_options()) as client:

            async def fetch(key: str, body: dict[str, Any]) -> str:
                async with limit:
                    reply = await self._post(client, body)
                self.cache.put(key, reply)
                return reply

            async def one(i: int) -> None:
                body = self.request_body(conversations[i], seeds[i] if seeds else None)
                key = ResponseCache.key({**body, **self.cache_scope})
                if key in self.cache.entries:
                    self.stats["cached"] += 1
                    reply = self.cache.entries[key]
                else:
                    if key in in_flight:
                        self.stats["cached"] += 1
                    else:
                        in_flight[key] = asyncio.ensure_future(fetch(key, body))
                    reply = await in_flight[key]
                replies[i] = reply
                if on_batch:
                    on_batch([i], [reply])

            await asyncio.gather(*(one(i) for i in range(len(conversations))))
        return replies  # type: ignore[return-value]

    async def _post(self, client: openai.AsyncOpenAI, body: dict[str, Any]) -> str:
        problem, retry_after = "", None
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                self.stats["retries"] += 1
                await asyncio.sleep(self._backoff(attempt, retry_after))
            self.stats["requests"] += 1
            try:
                return await self._attempt(client, body)
            except Retry as e:
                problem, retry_after = e.problem, e.retry_after
        raise EngineError(
            f"{self.cfg.base_url}: gave up after {self.cfg.max_retries} retries (last: {problem})"
        )

    async def _attempt(self, client: openai.AsyncOpenAI, body: dict[str, Any]) -> str:
        """One HTTP request: its reply, or `Retry`, or `EngineError` for a failure for good."""
        try:
            completion = await client.chat.completions.create(**body, extra_headers=self._headers())
        except openai.APIStatusError as e:
            if e.status_code in RETRY_STATUS or e.status_code >= 500:
                raise Retry(
                    f"HTTP {e.status_code}", e.response.headers.get("retry-after")
                ) from None
            raise EngineError(self._status_message(e)) from None
        except openai.APIConnectionError as e:  # timeouts too
            raise Retry(type(e.__cause__ or e).__name__) from None
        except (openai.APIResponseValidationError, json.JSONDecodeError):  # a truncated body
            raise Retry("malformed body") from None
        except openai.OpenAIError as e:
            raise EngineError(f"{self.cfg.base_url}: {type(e).__name__}: {e}") from None
        return self._reply(completion)

    def _reply(self, completion: Any) -> str:
        """The reply text, its usage and finish reason counted; `Retry` when the 200's body is
        not a chat completion (valid JSON from a proxy, say: the SDK parses it leniently)."""
        try:
            choice = completion.choices[0]
            reply = choice.message.content or ""
        except (AttributeError, IndexError, TypeError):
            raise Retry("malformed body") from None
        if not isinstance(reply, str):
            raise Retry("malformed body")
        usage = getattr(completion, "usage", None)
        self.stats["prompt_tokens"] += int(getattr(usage, "prompt_tokens", 0) or 0)
        self.stats["completion_tokens"] += int(getattr(usage, "completion_tokens", 0) or 0)
        self.stats["truncated"] += getattr(choice, "finish_reason", None) == "length"
        return reply

    def _status_message(self, e: openai.APIStatusError) -> str:
        # the SDK reads an error's body before raising, streamed or not
        return f"{self.cfg.base_url}: HTTP {e.status_code}: {e.response.text[:300]}"

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        """The server's Retry-After when it sends seconds; else exponential, with jitter so
        retrying clients spread out."""
        try:
            return min(float(retry_after), self.cfg.max_backoff_s)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            base = min(self.cfg.backoff_s * 2 ** (attempt - 1), self.cfg.max_backoff_s)
            return base * (0.5 + random.random() / 2)
