"""One client for LLM judges: any OpenAI-compatible chat-completions endpoint (OpenAI, Azure, a local vLLM or SGLang
server), for the caption metrics. Stdlib HTTP, so that: a metric's preset (model, sampling) is sent exactly ("not
sent" is not 0: AutoDQ sends no temperature) and every report names the requested and reported model, endpoint,
settings, calls and tokens; every reply is cached by sha256 of (endpoint kind, model, messages, sampling, metric,
attempt), so a re-ask (the next attempt) samples again and a replay repeats the sequence (`cache_only`: replay only,
a miss fails); 429 / 5xx / timeouts / dropped connections / non-completions are retried with exponential backoff and
jitter, other HTTP errors fail the call; `map` judges `concurrency` samples at a time; the key, from
`$<api_key_env>`, only goes into a header and is masked out of error text.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen


@dataclass
class JudgeConfig:
    """`judge.*` of `vamba eval`: the LLM judge of caption benchmarks (no base_url: captions are left unscored)."""

    base_url: str | None = None  # https://api.openai.com/v1, http://127.0.0.1:8000/v1 (vLLM/SGLang), Azure endpoint
    model: str | None = None  # default: the metric's official judge (gpt-3.5-turbo-0125 / gpt-4o-2024-05-13)
    api_key_env: str = "OPENAI_API_KEY"  # the environment variable holding the key (never a config value)
    api_version: str | None = None  # Azure OpenAI: its api-version (`model` is then the deployment name)
    temperature: float | None = None  # None: the metric's preset (AutoDQ sends none, G-VEval 1); a value is labelled
    cache_dir: str | None = None  # default <output_dir>/judge_cache; share one to reuse calls across runs
    cache_only: bool = False  # replay cached calls only; a miss fails the run
    concurrency: int = 8  # samples judged at once
    timeout_s: float = 60.0
    max_retries: int = 6  # per call, on 429 / 5xx / timeouts / malformed replies (exponential backoff, jitter)
    backoff_s: float = 1.0  # first wait; doubles per retry, capped at 60 s
    gveval_prompts: str | None = None  # G-VEval: a checkout of ztangaj/gveval (or its evaluation/gveval/prompts)
    gveval_mode: str = "combined"  # G-VEval: ref-only | ref-free | combined
    accr: bool = False  # G-VEval on videos: the four ACCR scores (accuracy, completeness, conciseness, relevance)


class JudgeError(RuntimeError):
    """A judge call that failed after its retries, or a judge that cannot be used (message names the endpoint)."""


class CacheMiss(LookupError):
    """`judge.cache_only` and no cached reply: the run stops (a replay that is not complete is not a replay)."""


@dataclass
class Reply:
    text: str
    logprobs: list[dict[str, Any]] | None = None  # [{token, logprob, top_logprobs: [{token, logprob}]}]
    model: str = ""


_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504} | set(range(520, 530))


class Judge:
    """A configured judge for one metric (`preset`: {"model", "sampling"}); thread-safe."""

    def __init__(self, cfg: JudgeConfig, preset: dict[str, Any], metric: str, cache_dir: str | Path):
        self.cfg, self.metric = cfg, metric
        self.model = cfg.model or preset["model"]
        self.sampling = dict(preset.get("sampling", {}))
        if cfg.temperature is not None:
            self.sampling["temperature"] = cfg.temperature
        self.base = (cfg.base_url or "").rstrip("/")
        self.kind = ("azure" if cfg.api_version else "openai" if "//api.openai.com" in self.base
                     else "openai-compatible")
        self.url = (f"{self.base}/openai/deployments/{self.model}/chat/completions?api-version={cfg.api_version}"
                    if cfg.api_version else f"{self.base}/chat/completions")
        self.cache = Path(cfg.cache_dir or cache_dir)
        self.configured = bool(self.base) or cfg.cache_only  # else: no judge, captions are left unscored
        self._key = os.environ.get(cfg.api_key_env) or None
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self.reported: set[str] = set()

    def identity(self) -> dict[str, Any]:
        """Who judged and at what cost (never the key)."""
        return {"metric": self.metric, "requested_model": self.model, "reported_models": sorted(self.reported),
                "endpoint": self.kind, "base_url": self.base or None, "sampling_sent": self.sampling,
                "cache_only": self.cfg.cache_only, **{k: self.stats[k] for k in (
                    "calls", "cache_hits", "retries", "failed_calls", "prompt_tokens", "completion_tokens")}}

    def check(self) -> None:
        """Fail now, naming the endpoint, when it cannot be reached or refuses the key (a GET of its model list)."""
        if self.cfg.cache_only or not self.base:
            return
        try:
            with urlopen(Request(f"{self.base}/models", headers=self._headers()), timeout=self.cfg.timeout_s):
                pass
        except HTTPError as e:
            if e.code in (401, 403):
                raise JudgeError(f"judge endpoint {self.base} refused the key in ${self.cfg.api_key_env} "
                                 f"(HTTP {e.code})") from None
        except (URLError, OSError, http.client.HTTPException) as e:
            raise JudgeError(f"judge endpoint {self.base} cannot be reached ({self._mask(getattr(e, 'reason', e))});"
                             f" check judge.base_url (a dry run, or a run without it, needs no judge)") from None

    def chat(self, messages: list[dict[str, Any]], attempt: int = 0) -> Reply:
        """The judge's reply to `messages` (the metric's `attempt`-th ask of them), from the cache when there."""
        request = {"endpoint": self.kind, "model": self.model, "messages": messages, "sampling": self.sampling,
                   "metric": self.metric, "attempt": attempt}
        key = sha256(json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode())
        path = self.cache / key.hexdigest()[:2] / f"{key.hexdigest()}.json"
        hit = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        if hit is not None and ("error" not in hit or self.cfg.cache_only):  # a failure replays only offline
            self._count(cache_hits=1)
            if "error" in hit:
                raise JudgeError(hit["error"])
            return self._reply(hit["response"])
        if self.cfg.cache_only:
            raise CacheMiss(f"judge.cache_only: no cached reply {path} ({self.metric}, attempt {attempt})")
        entry: dict[str, Any] = {"request": {**request, "messages": _digest_media(messages)}, "created": time.time()}
        try:
            entry["response"] = self._post({"model": self.model, "messages": messages, **self.sampling})
            return self._reply(entry["response"])
        except JudgeError as e:
            entry["error"] = str(e)
            self._count(failed_calls=1)
            raise
        finally:
            if "response" in entry or "error" in entry:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
                tmp.write_text(json.dumps(entry, ensure_ascii=False), encoding="utf-8")
                os.replace(tmp, path)

    def map(self, fn, items: list) -> list:
        """`[fn(item) for item in items]`, `concurrency` at a time, in order."""
        from tqdm import tqdm

        with ThreadPoolExecutor(max_workers=max(1, self.cfg.concurrency)) as pool:
            return list(tqdm(pool.map(fn, items), total=len(items), desc=f"judge {self.metric}", unit="sample"))

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        data, why = json.dumps(body).encode(), ""
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                self._count(retries=1)
                time.sleep(min(60.0, self.cfg.backoff_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0))
            try:
                with urlopen(Request(self.url, data, self._headers()), timeout=self.cfg.timeout_s) as r:
                    out = json.loads(r.read())
                self._count(calls=1)
                out["choices"][0]["message"].get("content")  # a completion, or retried as malformed
                return out
            except HTTPError as e:
                self._count(calls=1)
                detail = self._mask(e.read()[:300].decode("utf-8", "replace"))
                if e.code not in _RETRY_STATUS:
                    raise JudgeError(f"judge {self.base}: HTTP {e.code} ({detail})") from None
                why = f"HTTP {e.code}"
            except (URLError, OSError, http.client.HTTPException) as e:
                why = f"connection: {self._mask(getattr(e, 'reason', e))}"
            except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                why = "malformed reply (not a chat completion)"
        raise JudgeError(f"judge {self.base}: gave up after {self.cfg.max_retries + 1} tries (last: {why})")

    def _reply(self, out: dict[str, Any]) -> Reply:
        choice, usage = out["choices"][0], out.get("usage") or {}
        self._count(prompt_tokens=int(usage.get("prompt_tokens") or 0),
                    completion_tokens=int(usage.get("completion_tokens") or 0))
        with self._lock:
            self.reported.add(str(out.get("model", "")))
        return Reply(text=choice["message"].get("content") or "", logprobs=(choice.get("logprobs") or {}).get(
            "content"), model=str(out.get("model", "")))

    def _headers(self) -> dict[str, str]:
        auth = {} if not self._key else {"api-key": self._key} if self.cfg.api_version else {
            "Authorization": f"Bearer {self._key}"}
        return {"Content-Type": "application/json", **auth}

    def _mask(self, text: Any) -> str:
        return str(text).replace(self._key, "***") if self._key else str(text)

    def _count(self, **values: int) -> None:
        with self._lock:
            self.stats.update(values)


def _digest_media(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages as a cache entry stores them: inline images as their sha256 (the key covers them whole)."""
    def item(x: Any) -> Any:
        url = x.get("image_url", {}).get("url", "") if isinstance(x, dict) else ""
        return {**x, "image_url": {**x["image_url"], "url": "sha256:" + sha256(url.encode()).hexdigest()}} if url else x

    return [{**m, "content": [item(x) for x in m["content"]]} if isinstance(m["content"], list) else m
            for m in messages]


def report_lines(i: dict[str, Any]) -> list[str]:
    """The judge's identity (`Judge.identity`) and costs for a Markdown report."""
    return [f"Judge ({i['metric']}): requested `{i['requested_model']}`, reported "
            f"{', '.join(f'`{m}`' for m in i['reported_models']) or '(none)'}; endpoint {i['endpoint']} "
            f"{i['base_url'] or '(cache only)'}; sampling sent {json.dumps(i['sampling_sent'], sort_keys=True)}",
            f"Judge calls: {i['calls']} sent, {i['cache_hits']} from the cache, {i['retries']} retries, "
            f"{i['failed_calls']} failed; tokens {i['prompt_tokens']} prompt + {i['completion_tokens']} completion"]
