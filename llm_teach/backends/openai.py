"""Any OpenAI-compatible server (vLLM, SGLang, `transformers serve`, hosted APIs) as a backend.

Why it looks the way it does:

- Every request goes through `llm_teach.backends.http` (bounded concurrency, a timeout,
  retries with backoff honouring `Retry-After`, one clear line when the server keeps failing,
  the API key kept out of everything written); this module holds the OpenAI semantics.
- Servers differ in what they honour. `transformers serve` ignores `n`: the first request
  that asks for several samples finds out, the backend remembers it, and fans out single-sample
  requests with seeds `seed + j` (vLLM seeds its own `n` children the same way). vLLM-only
  request fields are only sent when token ids are wanted, and dropped once a server rejects them.
- `score()` needs exact token boundaries, so the backend tokenizes locally (the served model's
  tokenizer, `tokenizer=` spec) and sends token ids; the log-probs come from vLLM's
  `prompt_logprobs` extension. A server that cannot do that is told apart by one tiny probe
  request and reported clearly; it is never answered with made-up zeros.
- `stats` counts requests, retries by cause, fan-out requests and token usage, so evaluation can
  write them into `manifest.json`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from llm_teach.backends.base import (Generation, Prompt, SamplingConfig, TailRequest, TokenLogprobs, cut_at_stop,
                                     encode_prompt, refuse_tail)
from llm_teach.backends.fleet import FleetConfig, make_transport
from llm_teach.backends.http import HTTPConfig, ServerRejected, Session, gather_or_cancel, run_sync
from llm_teach.errors import UserError

# Fields only vLLM (and close relatives) understand; strict servers answer 422 to them.
_EXTENSIONS = ("return_token_ids",)


@dataclass
class OpenAIConfig(HTTPConfig):
    """How to reach and treat an OpenAI-compatible server (the transport's fields, then ours)."""

    tokenizer: str | None = None  # score(): model spec of the served model's tokenizer (default: the model name)
    fleet: FleetConfig = field(default_factory=FleetConfig)  # several comma-separated base URLs: failover rules


class OpenAIBackend:
    """Generate (and, on vLLM servers, score) through an OpenAI-compatible HTTP server.

    `stats` is what evaluation writes into manifest.json as `backend_stats`: `requests` (HTTP
    attempts, retries included), `retries` by cause (http_429, http_5xx, timeout, connection,
    bad_response), `fan_out_requests`, `server_ignores_n`, and the servers' `usage` token counts;
    with several base URLs also `servers`: requests, failures and cool-downs per server.
    """

    name = "openai"

    def __init__(self, model: str, config: OpenAIConfig):
        # One URL: a `Transport`; several (comma-separated): a fleet of them (`backends.fleet`).
        self._http = make_transport(config, config.fleet)  # checks the config, reads the key, masks the URLs
        self.model = model
        self.config = config
        self.base_url = self._http.base_url  # what messages, stats and reprs show
        self._tokenizer = None
        # What we learn about the server, once per backend instance.
        self._server_ignores_n: bool | None = None
        self._extensions_ok = True
        self._can_score = False
        self.stats: dict[str, Any] = self._http.stats  # server, requests, retries: counted by the transport
        self.stats.update({
            "fan_out_requests": 0,  # single-sample requests sent because the server ignored `n`
            "server_ignores_n": None,
            "prompt_tokens": 0,  # as reported in the server's `usage`
            "completion_tokens": 0,
        })

    @classmethod
    def from_options(cls, model: str, options) -> "OpenAIBackend":
        """Build from the CLI's `BackendOptions` (what `make_backend` calls)."""
        if not options.base_url:
            raise UserError("--backend openai needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        return cls(model, OpenAIConfig(
            base_url=options.base_url, api_key_env=options.api_key_env,
            max_concurrency=options.max_concurrency, timeout=options.timeout,
            max_retries=options.max_retries, tokenizer=getattr(options, "tokenizer", None)))

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r})"

    # -- generate --------------------------------------------------------------------------
    @property
    def end_of_turn(self) -> str:
        """The served model's EOS, from its local tokenizer (as `score()` needs it anyway)."""
        return self._load_tokenizer().eos_token

    def generate(self, prompts: Sequence[Prompt], n: int, sampling: SamplingConfig) -> list[list[Generation]]:
        """`n` completions per prompt; chats go to /chat/completions, strings to /completions."""
        if n < 1:
            raise ValueError("n must be at least 1")
        return run_sync(self._generate_all(list(prompts), n, sampling))

    async def _generate_all(self, prompts: list[Prompt], n: int, sampling: SamplingConfig) -> list[list[Generation]]:
        async with self._http.session() as session:
            return await gather_or_cancel(self._sample(session, p, n, sampling) for p in prompts)

    def generate_in_order(self, groups: Sequence[Sequence[Prompt]], n: int, sampling: SamplingConfig,
                          done: Callable[[list[list[Generation]]], None]) -> None:
        """`generate` over several groups of prompts in one go, for callers that save their work
        group by group (evaluation's chunks): every prompt's requests queue for the same
        `max_concurrency` slots, so the slots stay full across group boundaries (one `generate`
        per group would cap the requests in flight at one group's and drain them at the end of
        each), and `done(generations)` is called for each group in order, as soon as it and every
        group before it are finished. Each prompt is its own request(s), seeded alike wherever
        it sits, so grouping changes no output."""
        if n < 1:
            raise ValueError("n must be at least 1")
        run_sync(self._generate_in_order([list(g) for g in groups], n, sampling, done))

    async def _generate_in_order(self, groups: list[list[Prompt]], n: int, sampling: SamplingConfig,
                                 done: Callable[[list[list[Generation]]], None]) -> None:
        async with self._http.session() as session:
            # Created in order, so the slots (a FIFO semaphore) serve earlier groups first.
            tasks = [[asyncio.ensure_future(self._sample(session, p, n, sampling)) for p in group] for group in groups]
            try:
                for group in tasks:
                    done([await task for task in group])
            finally:  # a failure (or Ctrl-C) leaves nothing running
                everything = [task for group in tasks for task in group]
                for task in everything:
                    task.cancel()
                await asyncio.gather(*everything, return_exceptions=True)

    async def _sample(self, session: Session, prompt: Prompt, n: int, sampling: SamplingConfig) -> list[Generation]:
        first = None
        if n > 1 and self._server_ignores_n is None:
            # The first multi-sample request runs alone and tells us whether `n` is honoured,
            # so the others do not all send a request that then has to be topped up anyway.
            async with session.probe_lock:
                if self._server_ignores_n is None:
                    first = await self._choices(session, prompt, n, sampling, sampling.seed)
                    self._server_ignores_n = len(first) < n
                    self.stats["server_ignores_n"] = self._server_ignores_n
        if first is None:
            asked = 1 if self._server_ignores_n else n
            first = await self._choices(session, prompt, asked, sampling, sampling.seed)
        return self._records(prompt, sampling, await self._top_up(session, prompt, n, sampling, first))

    async def _top_up(self, session: Session, prompt: Prompt, n: int, sampling: SamplingConfig,
                      got: list[dict]) -> list[dict]:
        """Fan out one request per missing sample, seeded `seed + j` so the samples differ."""
        missing = range(len(got), n)
        self.stats["fan_out_requests"] += len(missing)
        more = await gather_or_cancel(self._choices(session, prompt, 1, sampling, sampling.seed + j) for j in missing)
        return (got + [c for choices in more for c in choices[:1]])[:n]

    async def _choices(self, session: Session, prompt: Prompt, n: int, sampling: SamplingConfig,
                       seed: int) -> list[dict]:
        chat = not isinstance(prompt, str)
        payload: dict[str, Any] = {
            "model": self.model,
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "seed": seed,
            ("messages" if chat else "prompt"): prompt,
        }
        if n > 1:
            payload["n"] = n
        if sampling.stop:
            payload["stop"] = list(sampling.stop)
        if sampling.logprobs:
            payload.update({"logprobs": True, "top_logprobs": 0} if chat else {"logprobs": 0})
            if self._extensions_ok:
                payload["return_token_ids"] = True
        path = "/chat/completions" if chat else "/completions"
        try:
            body = await self._post(session, path, payload)
        except ServerRejected as exc:
            if not any(field in payload and field in exc.detail for field in _EXTENSIONS):
                raise
            self._extensions_ok = False  # a strict server: ask again in plain OpenAI terms
            body = await self._post(session, path, {k: v for k, v in payload.items() if k not in _EXTENSIONS})
        choices = sorted(body.get("choices") or [], key=lambda c: c.get("index", 0))
        if not choices:
            raise UserError(f"server {self.base_url} answered {path} without any choices")
        return [_parse_choice(c, chat, sampling) for c in choices]

    def _records(self, prompt: Prompt, sampling: SamplingConfig, choices: list[dict]) -> list[Generation]:
        return [Generation(prompt=prompt, backend=self.name, model=self.model, sampling=sampling.to_dict(), **c)
                for c in choices]

    # -- score -----------------------------------------------------------------------------
    def score(self, prompts: Sequence[Prompt], completions: Sequence[str], top_k: int = 0,
              tail: TailRequest | None = None) -> list[TokenLogprobs]:
        """Log-probs of each completion's tokens through vLLM's `prompt_logprobs`.

        Prompt and completion are tokenized here exactly as `HFBackend.score` does (the
        completion on its own, appended to the prompt tokens) and sent as token ids, so the
        boundaries are exact and the numbers comparable across backends.
        """
        refuse_tail(self.name, tail)
        tokenizer = self._load_tokenizer()
        pairs = [(encode_prompt(tokenizer, p), tokenizer(c, add_special_tokens=False)["input_ids"])
                 for p, c in zip(prompts, completions, strict=True)]
        for p, c in pairs:
            if c and not p:
                raise UserError("score(): a prompt encodes to no tokens, so its first completion token has no context")
        return run_sync(self._score_all(pairs, top_k))

    async def _score_all(self, pairs: list[tuple[list[int], list[int]]], top_k: int) -> list[TokenLogprobs]:
        async with self._http.session() as session:
            todo = [(p, c) for p, c in pairs if c]
            if todo and not self._can_score:
                await self._probe_scoring(session, todo[0][0] + todo[0][1])
            scored = iter(await gather_or_cancel(self._score_one(session, p, c, top_k) for p, c in todo))
            return [next(scored) if c else TokenLogprobs([], [], [] if top_k else None) for _, c in pairs]

    async def _probe_scoring(self, session: Session, ids: list[int]) -> None:
        """One tiny request (two prompt tokens, one new token) that tells whether this server
        returns prompt log-probs at all, before a whole batch is sent."""
        probe = ids[:2]
        no = (f"server {self.base_url} does not return prompt log-probs, so score() cannot work through it "
              f"(vLLM's OpenAI server does: `llm-teach serve MODEL` with vLLM installed, or `vllm serve MODEL`)")
        try:
            body = await self._post(session, "/completions", self._score_payload(probe, 0))
        except ServerRejected as exc:
            raise UserError(f"{no}; it answered HTTP {exc.status}: {exc.detail[:200]}") from None
        entries = ((body.get("choices") or [{}])[0]).get("prompt_logprobs")
        if not isinstance(entries, list) or len(entries) != len(probe) or (len(probe) > 1 and not entries[1]):
            raise UserError(f"{no}; its /completions answer holds no prompt_logprobs")
        self._can_score = True

    def _score_payload(self, ids: list[int], top_k: int) -> dict[str, Any]:
        return {"model": self.model, "prompt": ids, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": top_k}

    async def _score_one(self, session: Session, p: list[int], c: list[int], top_k: int) -> TokenLogprobs:
        body = await self._post(session, "/completions", self._score_payload(p + c, top_k))
        entries = body["choices"][0]["prompt_logprobs"]
        logprobs, tops = [], []
        for j, token in enumerate(c):
            entry = {int(k): float(v["logprob"]) for k, v in (entries[len(p) + j] or {}).items()}
            if token not in entry:
                raise UserError(f"server {self.base_url} returned no log-prob for completion token {token}")
            logprobs.append(entry[token])
            if top_k:
                # The server adds the actual token to its top-k when it ranks lower: keep the top k.
                best = sorted(entry.items(), key=lambda kv: kv[1], reverse=True)[:top_k]
                tops.append(dict(best))
        return TokenLogprobs(token_ids=list(c), logprobs=logprobs, top_k=tops if top_k else None)

    def _load_tokenizer(self):
        if self._tokenizer is None:
            from llm_teach.models import load_tokenizer, parse_spec

            spec = self.config.tokenizer or self.model
            try:
                parse_spec(spec)
            except UserError:
                raise UserError(
                    f"score() tokenizes locally to find each completion's tokens, and the served model "
                    f"name '{spec}' is not a model spec: pass --tokenizer SPEC (the served model's local "
                    f"directory or hub id)") from None
            self._tokenizer = load_tokenizer(spec)
        return self._tokenizer

    # -- HTTP ------------------------------------------------------------------------------
    async def _post(self, session: Session, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST through the transport (retries, one-line errors) and count the server's usage."""
        body = await self._http.post(session, path, payload)
        self._count_usage(body)
        return body

    def _count_usage(self, body: dict[str, Any]) -> None:
        usage = body.get("usage") or {}
        for key in ("prompt_tokens", "completion_tokens"):
            if isinstance(usage.get(key), int):
                self.stats[key] += usage[key]


# -- answers ---------------------------------------------------------------------------------
def _parse_choice(choice: dict[str, Any], chat: bool, sampling: SamplingConfig) -> dict[str, Any]:
    """One server choice -> the fields of a Generation."""
    if chat:
        text = (choice.get("message") or {}).get("content") or ""
        content = (choice.get("logprobs") or {}).get("content")
        logprobs = [float(e["logprob"]) for e in content] if content else None
    else:
        text = choice.get("text") or ""
        logprobs = (choice.get("logprobs") or {}).get("token_logprobs")
        logprobs = [float(x) for x in logprobs] if logprobs else None
    token_ids = choice.get("token_ids") or None
    finish = choice.get("finish_reason") or "stop"
    # vLLM counts the EOS token as generated (stop_reason None means it stopped on EOS); the
    # other backends' records do not hold it.
    if finish == "stop" and "stop_reason" in choice and choice["stop_reason"] is None:
        token_ids = token_ids[:-1] if token_ids else token_ids
        logprobs = logprobs[:-1] if logprobs else logprobs
    # Some servers (transformers serve) keep the stop string in the text; OpenAI semantics cut it.
    text, cut = cut_at_stop(text, sampling.stop)
    finish = "stop" if cut else finish
    return dict(completion=text, finish_reason=finish, token_ids=token_ids, logprobs=logprobs)
