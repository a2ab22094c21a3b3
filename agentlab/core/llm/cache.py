"""The router's response cache: the same request asked again gets the stored answer, without a model call.

Exact match on the normalised request: the route, the messages, the sampling params (temperature, top_p, max_tokens,
stop, seed, ...), the tools and tool choice, the JSON schema, and the tenant (a gateway key's ``tenant``: one
tenant never gets another's answer, because the tenant is part of the key). Normalised means: dict keys sorted,
unset params dropped; nothing else is rewritten (a changed space is another request).

What is cached: only answers that are meant to repeat. A request whose temperature is above 0 without a ``seed`` is
sampled, so asking again should give another answer: it is not cached unless ``cache_sampled`` says so. The
temperature is the request's, else the route's first model's configured one; a request that sets none anywhere is
treated as sampled (most backends default to 1.0).

Where: ``memory`` (a bounded LRU in the process) or ``sqlite`` (a file, shared by every command and gateway that
names it; a run folder or a user folder such as ``~/.cache/agentlab/llm-cache.sqlite``). Both drop entries older
than ``ttl_s`` and keep at most ``max_entries`` (least recently stored dropped first in SQLite, least recently used
in memory).

Off by default (``cache.enabled: false``): commands that measure models (llm-bench, benchmarks, eval) must see
every call reach the model; ``Router.call_model`` (llm-bench) never reads the cache even when it is on.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from agentlab.core.config import StrictModel
from agentlab.core.llm.types import Completion, GenParams, Messages, ToolCall, Usage

__all__ = ["CacheConfig", "ResponseCache", "build_cache"]


class CacheConfig(StrictModel):
    enabled: bool = Field(False, description="answer a repeated request from the cache (off: every call reaches a "
                          "model; keep it off for runs that measure models)")
    backend: Literal["memory", "sqlite"] = Field("memory", description="memory: an LRU in this process; sqlite: a "
                                                 "file shared by every command and gateway naming it")
    path: Path | None = Field(None, description="sqlite: the database file (e.g. ~/.cache/agentlab/llm-cache.sqlite; "
                              "~ is expanded); empty: ~/.cache/agentlab/llm-cache.sqlite")
    ttl_s: float = Field(3600.0, gt=0, description="an entry older than this is a miss (and is dropped)")
    max_entries: int = Field(10_000, ge=1, description="most entries kept; the oldest go first")
    cache_sampled: bool = Field(False, description="also cache requests sampled at temperature > 0 without a seed "
                                "(off: such a request is expected to give a new answer each time)")


def _completion_dict(completion: Completion) -> dict[str, Any]:
    usage = completion.usage
    return {"text": completion.text, "model": completion.model, "finish_reason": completion.finish_reason,
            "usage": [usage.prompt_tokens, usage.completion_tokens, usage.reported],
            "tool_calls": [[c.id, c.name, c.arguments] for c in completion.tool_calls]}


def _completion_of(data: dict[str, Any]) -> Completion:
    prompt, completion_tokens, reported = data["usage"]
    return Completion(data["text"], data["model"], Usage(prompt, completion_tokens, reported), 0.0, None,
                      data["finish_reason"], None, [ToolCall(*c) for c in data["tool_calls"]])


class ResponseCache:
    """A bounded, expiring map from a request key to ``(model config name, Completion)``; thread-safe (the sync
    router API and a gateway may share one)."""

    def __init__(self, cfg: CacheConfig):
        self.cfg = cfg
        self.clock = time.time  # the entries' age (tests move it)
        self._lock = threading.Lock()
        self._memory: OrderedDict[str, tuple[float, str, str]] = OrderedDict()
        self._db: sqlite3.Connection | None = None
        if cfg.backend == "sqlite":
            path = (cfg.path or Path("~/.cache/agentlab/llm-cache.sqlite")).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, stored REAL NOT NULL, "
                             "model TEXT NOT NULL, answer TEXT NOT NULL)")
            self._db.execute("CREATE INDEX IF NOT EXISTS responses_stored ON responses (stored)")

    def key(self, route: str, messages: Messages, params: GenParams, default_temperature: float | None,
            tenant: str = "") -> str | None:
        """The request's cache key, or None when it must not be cached (sampled without a seed)."""
        temperature = params.temperature if params.temperature is not None else default_temperature
        if not self.cfg.cache_sampled and params.seed is None and (temperature is None or temperature > 0):
            return None
        sent = {k: v for k, v in vars(params).items() if v is not None and v != {}}
        try:
            text = json.dumps([tenant, route, messages, sent], sort_keys=True, ensure_ascii=False,
                              separators=(",", ":"))
        except (TypeError, ValueError):  # something not JSON in the params: do not guess a key
            return None
        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, key: str) -> tuple[str, Completion] | None:
        now = self.clock()
        with self._lock:
            if self._db is None:
                found = self._memory.get(key)
                if found is None:
                    return None
                if now - found[0] > self.cfg.ttl_s:
                    del self._memory[key]
                    return None
                self._memory.move_to_end(key)
                stored, model, answer = found
            else:
                row = self._db.execute("SELECT stored, model, answer FROM responses WHERE key = ?", (key,)).fetchone()
                if row is None:
                    return None
                stored, model, answer = row
                if now - stored > self.cfg.ttl_s:
                    self._db.execute("DELETE FROM responses WHERE key = ?", (key,))
                    return None
        return model, _completion_of(json.loads(answer))

    def put(self, key: str, model: str, completion: Completion) -> None:
        answer = json.dumps(_completion_dict(completion), ensure_ascii=False)
        now = self.clock()
        with self._lock:
            if self._db is None:
                self._memory[key] = (now, model, answer)
                self._memory.move_to_end(key)
                while len(self._memory) > self.cfg.max_entries:
                    self._memory.popitem(last=False)
                return
            self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?)", (key, now, model, answer))
            self._db.execute("DELETE FROM responses WHERE stored < ?", (now - self.cfg.ttl_s,))
            (count,) = self._db.execute("SELECT COUNT(*) FROM responses").fetchone()
            if count > self.cfg.max_entries:
                self._db.execute("DELETE FROM responses WHERE key IN (SELECT key FROM responses ORDER BY stored "
                                 "LIMIT ?)", (count - self.cfg.max_entries,))

    def __len__(self) -> int:
        with self._lock:
            if self._db is None:
                return len(self._memory)
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None  # from here on the cache lives in memory


def build_cache(cfg: CacheConfig) -> ResponseCache | None:
    """The cache of a routing config, or None when it is off."""
    return ResponseCache(cfg) if cfg.enabled else None
