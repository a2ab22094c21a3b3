"""Client keys with names, rate limits, budgets and allowed routes (``agentlab serve --keys FILE``).

The keys file (YAML) holds no secret: each key is named by the environment variable that holds it (``key_env``,
read from the environment or .env) or by its SHA-256 (``key_sha256``: ``python -c "import hashlib, sys;
print(hashlib.sha256(sys.argv[1].encode()).hexdigest())" KEY``)::

    keys:
      - name: team-a              # what logs, events, metrics and /v1/keys/usage show (never the key)
        key_env: TEAM_A_KEY
        rpm: 60                   # requests per minute (429 with Retry-After above)
        tpm: 200000               # tokens per minute, counted on the answers' usage (429 with Retry-After above)
        max_tokens: 5000000       # token budget: refused (429 insufficient_quota) once spent
        max_cost_usd: 20          # cost budget, from `prices`
        routes: [fast, default]   # the served names it may ask for (empty: all)
        tenant: team-a            # the response cache's tenant (default: the name): tenants never share answers
      - name: ops
        key_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
        admin: true               # may read GET /v1/keys/usage
    prices:                       # USD per million tokens, by model config name
      gpt-4o-mini: {prompt: 0.15, completion: 0.60}
    usage_file: keys.usage.json   # spend survives a restart (written at most once a second and at stop)

Budgets are never overspent, concurrency included: a request reserves, before it is sent, the most it can cost (an
upper bound of its prompt tokens, the request's UTF-8 bytes plus a few per message, plus its ``max_tokens``, times
the answers a best_of_n route asks for) and is refused when spent + reserved + that bound passes the budget; the
check and the reservation run with no await in between, so concurrent requests cannot all pass on the same
remaining budget. Once answered, the reservation is replaced by the answer's usage. A budgeted key's request with no
``max_tokens`` gets the route's configured one, else the gateway's ``max_tokens``, so its bound holds.

Keys from ``api_key_env`` (comma-separated) are keys too, named ``env-1``, ``env-2``, ... with no limits.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import time
from collections import deque
from collections.abc import Collection
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from agentlab.core.config import StrictModel, config_where, getenv, load_config
from agentlab.core.errors import ConfigError
from agentlab.core.runs import atomic_write_text
from agentlab.serve.config import env_name_problem, unset_env
from agentlab.serve.protocol import ApiError

__all__ = ["KeySpec", "KeysFile", "KeyState", "KeyRing", "Ticket", "load_keys"]

log = logging.getLogger("agentlab.serve")

_WINDOW_S = 60.0
# The names the gateway serves while ``load_keys`` reads a keys file: a key's ``routes`` naming none of them would get
# a 403 on every request, so validation refuses it, at the file's line (None: not known, nothing checked).
_SERVED: ContextVar[Collection[str] | None] = ContextVar("agentlab_served_names", default=None)
# The next step for a keys file that is missing, empty or not a mapping: no command writes one, so its shape.
KEYS_FILE_HINT = ("a keys file is YAML: `keys:` then one entry per client, `- name: NAME` with `key_env: VARIABLE` "
                  "(the environment variable holding its key) or `key_sha256: HEX`, and optional rpm, tpm, "
                  "max_tokens, max_cost_usd, routes; docs/commands/serve.md (Client keys) has a full example")


class KeySpec(StrictModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$",
                      description="the key's name: what logs, events, metrics and the usage endpoint show")
    key_env: str | None = Field(None, description="environment variable (or .env entry) holding the key")
    key_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$", description="the key's SHA-256, in hex "
                                   "(the file then holds no secret)")
    tenant: str | None = Field(None, description="response-cache tenant (default: the name)")
    rpm: int | None = Field(None, ge=1, description="requests per minute")
    tpm: int | None = Field(None, ge=1, description="tokens per minute (prompt + completion of the answers)")
    max_tokens: int | None = Field(None, ge=1, description="token budget (prompt + completion)")
    max_cost_usd: float | None = Field(None, gt=0, description="cost budget in USD (needs `prices`)")
    routes: list[str] = Field(default_factory=list, description="served names this key may ask for; empty: all")
    admin: bool = Field(False, description="may read GET /v1/keys/usage")

    @field_validator("routes")
    @classmethod
    def _served_routes(cls, routes: list[str]) -> list[str]:
        served = _SERVED.get()
        if served is not None:
            unknown = [name for name in routes if name not in served]
            if unknown:
                shown = ", ".join(list(served)[:20]) + (", ..." if len(served) > 20 else "")
                raise ValueError(f"unknown route '{unknown[0]}' (known: {shown}): a key's routes name routes "
                                 "or models of the routing config served (--llm)")
        return routes

    @model_validator(mode="after")
    def _one_secret(self) -> KeySpec:
        if (self.key_env is None) == (self.key_sha256 is None):
            raise ValueError(f"key '{self.name}': give exactly one of key_env (a variable name) and key_sha256")
        if self.key_env is not None and (problem := env_name_problem(self.key_env)):
            raise ValueError(f"key '{self.name}': key_env: {problem}")
        return self


class Price(StrictModel):
    prompt: float = Field(ge=0, description="USD per million prompt tokens")
    completion: float = Field(ge=0, description="USD per million completion tokens")


class KeysFile(StrictModel):
    keys: list[KeySpec] = Field(default_factory=list, description="the client keys")
    prices: dict[str, Price] = Field(default_factory=dict, description="USD per million tokens, by model name")
    usage_file: Path | None = Field(None, description="JSON file keeping each key's spend across restarts "
                                    "(relative to the keys file)")


@dataclass
class Ticket:
    """One admitted request's reservation."""

    key: KeyState
    tokens: int
    cost: float
    settled: bool = False


@dataclass
class KeyState:
    spec: KeySpec
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    reserved_tokens: int = 0
    reserved_cost: float = 0.0
    refused: dict[str, int] = field(default_factory=dict)
    recent: deque[float] = field(default_factory=deque)  # request times in the last minute
    recent_tokens: deque[tuple[float, int]] = field(default_factory=deque)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def tenant(self) -> str:
        return self.spec.tenant or self.spec.name

    @property
    def limited(self) -> bool:
        s = self.spec
        return bool(s.rpm or s.tpm or s.max_tokens or s.max_cost_usd or s.routes)

    @property
    def budgeted(self) -> bool:
        return self.spec.max_tokens is not None or self.spec.max_cost_usd is not None

    def usage(self) -> dict[str, Any]:
        s = self.spec
        spent = self.prompt_tokens + self.completion_tokens
        return {"name": s.name, "tenant": self.tenant, "requests": self.requests,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cost_usd": round(self.cost_usd, 6), "max_tokens": s.max_tokens, "max_cost_usd": s.max_cost_usd,
                "tokens_left": None if s.max_tokens is None else max(0, s.max_tokens - spent),
                "in_flight_tokens": self.reserved_tokens, "rpm": s.rpm, "tpm": s.tpm, "routes": s.routes or None,
                "refused": dict(self.refused)}


def _refuse(status: int, message: str, code: str, kind: str, retry_after: float | None = None) -> ApiError:
    headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after is not None else {}
    etype = "rate_limit_error" if code == "rate_limit_exceeded" else "insufficient_quota" if status == 429 \
        else "permission_error"
    return ApiError(status, message, code, etype=etype, kind=kind, headers=headers)


class KeyRing:
    """The gateway's client keys: authentication (by SHA-256 of the bearer token), admission (routes, rate limits,
    budgets) and spend. Runs on the gateway's event loop: admission is synchronous, hence atomic."""

    def __init__(self, keys: list[tuple[KeySpec, str]], prices: dict[str, Price] | None = None,
                 usage_file: Path | None = None):
        self.states: dict[bytes, KeyState] = {}
        self.by_name: dict[str, KeyState] = {}
        for spec, digest in keys:
            state = KeyState(spec)
            self.states[bytes.fromhex(digest)] = state
            self.by_name[spec.name] = state
        self.prices = prices or {}
        self.usage_file = usage_file
        self._saved_at = 0.0
        self._dirty = False
        self._flush: asyncio.TimerHandle | None = None  # a save put off to the end of the second (see ``settle``)
        self.on_spend: Any = None  # (key name, prompt, completion, cost) -> None: the metrics
        self.on_refuse: Any = None  # (key name, reason) -> None
        if usage_file is not None and usage_file.is_file():
            self._load(usage_file)

    def __bool__(self) -> bool:
        return bool(self.states)

    def find(self, token: bytes) -> KeyState | None:
        return self.states.get(hashlib.sha256(token).digest())

    # ------------------------------------------------------------------ admission

    def admit(self, key: KeyState, served_name: str, models: list[str], prompt_bound: int, max_tokens: int,
              answers: int = 1) -> Ticket | None:
        """Check ``key`` may send this request now and reserve its most cost; raises ``ApiError`` (403 for a route
        it may not use, 429 with Retry-After for a rate limit, 429 insufficient_quota for a spent budget)."""
        spec = key.spec
        if spec.routes and served_name not in spec.routes:
            self._count(key, "route")
            raise _refuse(403, f"key '{spec.name}' may not use '{served_name[:100]}' (allowed: "
                          f"{', '.join(spec.routes)})", "model_not_allowed", "forbidden")
        now = time.monotonic()
        if spec.rpm is not None:
            recent = key.recent
            while recent and recent[0] <= now - _WINDOW_S:
                recent.popleft()
            if len(recent) >= spec.rpm:
                self._count(key, "rpm")
                raise _refuse(429, f"key '{spec.name}' is over its rate limit of {spec.rpm} requests per minute",
                              "rate_limit_exceeded", "rate_limited", recent[0] + _WINDOW_S - now)
        if spec.tpm is not None:
            window = key.recent_tokens
            while window and window[0][0] <= now - _WINDOW_S:
                window.popleft()
            used = sum(n for _, n in window)
            if used >= spec.tpm:
                wait, left = _WINDOW_S, used
                for at, n in window:  # until enough of the minute's tokens age out
                    left -= n
                    if left < spec.tpm:
                        wait = at + _WINDOW_S - now
                        break
                self._count(key, "tpm")
                raise _refuse(429, f"key '{spec.name}' is over its rate limit of {spec.tpm} tokens per minute",
                              "rate_limit_exceeded", "rate_limited", wait)
        tokens = (prompt_bound + max_tokens) * answers
        cost = 0.0
        if spec.max_tokens is not None:
            spent = key.prompt_tokens + key.completion_tokens
            if tokens > spec.max_tokens:  # more than the whole budget: no request of this size ever passes
                self._count(key, "budget")
                times = f", times {answers} answers" if answers > 1 else ""
                raise _refuse(429, f"key '{spec.name}' cannot make this request: it may use up to {tokens} tokens "
                              f"(an upper bound of its prompt, {prompt_bound}, plus max_tokens {max_tokens}{times}), "
                              f"more than the key's whole token budget of {spec.max_tokens} (lower max_tokens or "
                              "shorten the prompt, or ask the admin to raise the key's max_tokens)",
                              "insufficient_quota", "budget")
            if spent + key.reserved_tokens + tokens > spec.max_tokens:
                self._count(key, "budget")
                left = spec.max_tokens - spent - key.reserved_tokens
                raise _refuse(429, f"key '{spec.name}' has spent its token budget: {spent} of {spec.max_tokens} "
                              f"used, {max(0, left)} not reserved by requests in flight; this request may use up "
                              f"to {tokens} (lower max_tokens, or ask the admin for more)", "insufficient_quota",
                              "budget")
        if spec.max_cost_usd is not None:
            cost = max((self._cost(m, prompt_bound, max_tokens) for m in models), default=0.0) * answers
            if cost > spec.max_cost_usd:
                self._count(key, "budget")
                raise _refuse(429, f"key '{spec.name}' cannot make this request: it may cost up to ${cost:.4f} "
                              f"({prompt_bound} prompt tokens at most plus max_tokens {max_tokens}), more than the "
                              f"key's whole cost budget of ${spec.max_cost_usd:g} (lower max_tokens or shorten the "
                              "prompt, or ask the admin to raise the key's max_cost_usd)", "insufficient_quota",
                              "budget")
            if key.cost_usd + key.reserved_cost + cost > spec.max_cost_usd:
                self._count(key, "budget")
                raise _refuse(429, f"key '{spec.name}' has spent its cost budget: ${key.cost_usd:.4f} of "
                              f"${spec.max_cost_usd:g} used; this request may cost up to ${cost:.4f}",
                              "insufficient_quota", "budget")
        if spec.rpm is not None:
            key.recent.append(now)
        key.reserved_tokens += tokens
        key.reserved_cost += cost
        return Ticket(key, tokens, cost)

    def _cost(self, model: str, prompt: int, completion: int) -> float:
        price = self.prices.get(model)
        if price is None:
            return 0.0
        return (prompt * price.prompt + completion * price.completion) / 1e6

    def _count(self, key: KeyState, reason: str) -> None:
        key.refused[reason] = key.refused.get(reason, 0) + 1
        if self.on_refuse is not None:
            self.on_refuse(key.name, reason)

    def settle(self, ticket: Ticket, model: str | None, prompt: int, completion: int) -> None:
        """Replace ``ticket``'s reservation by what the answer used (``model`` None: no answer, nothing spent)."""
        if ticket.settled:
            return
        ticket.settled = True
        key = ticket.key
        key.reserved_tokens -= ticket.tokens
        key.reserved_cost -= ticket.cost
        if model is None:
            return
        cost = self._cost(model, prompt, completion)
        key.requests += 1
        key.prompt_tokens += prompt
        key.completion_tokens += completion
        key.cost_usd += cost
        if key.spec.tpm is not None:
            key.recent_tokens.append((time.monotonic(), prompt + completion))
        if self.on_spend is not None:
            self.on_spend(key.name, prompt, completion, cost)
        self._dirty = True
        if self.usage_file is None:
            return
        wait = self._saved_at + 1.0 - time.monotonic()
        if wait < 0:
            self._save_or_warn()
        elif self._flush is None:  # saved less than a second ago: this spend is written when the second is up
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop (a sync caller): the next save or the stop writes it
                return
            self._flush = loop.call_later(wait, self._save_or_warn)

    def count_request(self, key: KeyState, model: str, prompt: int, completion: int) -> None:
        """Spend of an unlimited key's request (no reservation)."""
        self.settle(Ticket(key, 0, 0.0), model, prompt, completion)

    # ------------------------------------------------------------------ spend on disk

    def usage(self) -> list[dict[str, Any]]:
        return [state.usage() for state in self.by_name.values()]

    def _save_or_warn(self) -> None:
        """``save`` after a request (or put off to the end of the second): a file that cannot be written is a
        warning, never a failed answer; the spend stays marked for the next save or the stop."""
        try:
            self.save()
        except OSError as exc:
            log.warning("the keys' usage file %s cannot be written: %s", self.usage_file, exc)

    def save(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self.usage_file is None or not self._dirty:
            return
        data = {s.name: {"requests": s.requests, "prompt_tokens": s.prompt_tokens,
                         "completion_tokens": s.completion_tokens, "cost_usd": s.cost_usd}
                for s in self.by_name.values()}
        atomic_write_text(self.usage_file, json.dumps(data, indent=1) + "\n")
        self._saved_at = time.monotonic()
        self._dirty = False

    def _load(self, path: Path) -> None:
        """Each key's spend from ``path`` (what ``save`` writes); ``ConfigError`` naming the entry and field that
        is not a count (negative counts too: they would add to a budget). Keys no longer in the keys file are left."""
        hint = "fix or remove it (each key's spend then starts at 0)"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: the keys' usage file cannot be read ({exc})", hint=hint) from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the keys' usage file must be a JSON object of each key's spend by its name, "
                              f"not a {_json_type(data)}", hint=hint)
        for name, spent in data.items():
            state = self.by_name.get(name)
            if state is None:
                continue
            if not isinstance(spent, dict):
                raise ConfigError(f"{path}: {name}: must be an object (requests, prompt_tokens, completion_tokens, "
                                  f"cost_usd), not a {_json_type(spent)}", hint=hint)
            counts: dict[str, Any] = {}
            for field_name in ("requests", "prompt_tokens", "completion_tokens", "cost_usd"):
                value = spent.get(field_name, 0)
                whole = field_name != "cost_usd"
                if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)) \
                        or not math.isfinite(value) or value < 0:
                    raise ConfigError(f"{path}: {name}.{field_name}: {json.dumps(value)[:40]} is not "
                                      f"{'a whole number' if whole else 'a number'} >= 0", hint=hint)
                counts[field_name] = value
            state.requests = counts["requests"]
            state.prompt_tokens = counts["prompt_tokens"]
            state.completion_tokens = counts["completion_tokens"]
            state.cost_usd = float(counts["cost_usd"])


def _json_type(value: Any) -> str:
    return {list: "list", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(value), "null")


def load_keys(path: Path | None, env_keys: list[str],
              served: Collection[str] | None = None) -> tuple[KeyRing, list[str]]:
    """The key ring of ``path`` (a keys file) plus ``env_keys`` (unlimited keys env-1, env-2, ...), and the secrets
    to scrub. ``ConfigError`` (exit 2) names the file, the key's name and what to do. ``served``: the names the
    gateway serves, which every key's ``routes`` must be among."""
    pairs: list[tuple[KeySpec, str]] = []
    secrets: list[str] = []
    prices: dict[str, Price] = {}
    usage_file = None
    for i, key in enumerate(env_keys, 1):
        pairs.append((KeySpec(name=f"env-{i}", key_sha256=hashlib.sha256(key.encode()).hexdigest()),
                      hashlib.sha256(key.encode()).hexdigest()))
        secrets.append(key)
    if path is not None:
        if not path.exists():
            raise ConfigError(f"{path}: keys file not found (--keys / keys_file)", hint="check the path; "
                              + KEYS_FILE_HINT)
        token = _SERVED.set(served)
        try:
            parsed = load_config(path, KeysFile)
        except ConfigError as exc:
            if exc.hint is not None and "agentlab config" in exc.hint:  # empty, or not a mapping: no schema to show
                exc.hint = KEYS_FILE_HINT
            raise
        finally:
            _SERVED.reset(token)
        prices = parsed.prices
        if parsed.usage_file is not None:
            usage_file = parsed.usage_file if parsed.usage_file.is_absolute() else path.parent / parsed.usage_file
            if usage_file.exists() and not usage_file.is_file():  # else every answer's save would fail
                raise ConfigError(f"{config_where(path, [], ('usage_file',)) or path}: usage_file: {usage_file} is "
                                  "a folder, not a file", hint="name a file for the keys' spend, e.g. usage_file: "
                                  "keys.usage.json (written by the gateway)")
        names = set()
        for spec in parsed.keys:
            if spec.name in names:
                raise ConfigError(f"{path}: two keys are named '{spec.name}'", hint="give each key its own name")
            names.add(spec.name)
            if spec.key_env is not None:
                value = getenv(spec.key_env) or os.environ.get(spec.key_env)
                if not value:
                    problem, hint = unset_env(spec.key_env)
                    raise ConfigError(f"{path}: key '{spec.name}': key_env {problem}", hint=hint)
                if len(value) < 16:
                    raise ConfigError(f"{path}: key '{spec.name}': the key in {spec.key_env} has fewer than 16 "
                                      "characters", hint="use a long random key, e.g. python -c 'import secrets; "
                                      "print(secrets.token_urlsafe())'")
                secrets.append(value)
                digest = hashlib.sha256(value.encode()).hexdigest()
            else:
                assert spec.key_sha256 is not None
                digest = spec.key_sha256.lower()
            pairs.append((spec, digest))
    digests = [d for _, d in pairs]
    if len(set(digests)) != len(digests):
        raise ConfigError("two client keys are the same key", hint="give each client its own key")
    return KeyRing(pairs, prices, usage_file), secrets
