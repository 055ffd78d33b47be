"""``dataforge run --estimate``: the requests, tokens and cost a config would send, before spending.

Why it can be close: the generation stages' requests are fully decided by the config (the
textbook plan, the CoT seeds x methods x samples, the synthesis plan), so they are rebuilt here
exactly as the stages build them — same messages, same parameters, same cache keys. What is
known is counted, what is not is assumed and said:

* **Requests the cache holds** cost nothing (their keys are looked up in the request cache,
  read-only); only the others are counted.
* **Prompt tokens**: the teacher's own tokenizer when it is available locally (the embedded
  teacher: the GGUF's vocabulary and chat template, through llama-cpp-python; another teacher:
  ``teacher.tokenizer``, a tokenizer.json), else ``estimate.chars_per_token`` characters a token
  plus a few tokens a message for the chat template.
* **Reply tokens**: stated (``estimate.completion_tokens[stage]``, else the stage's
  ``max_tokens``: an upper bound) or sampled (``--estimate-sample N``: N real requests per
  stage, spread over its plan, sent through the cached client so the run reuses them; their
  mean reply length is extrapolated, and with the characters rule their measured prompt tokens
  correct the prompt estimate too).
* **The instructions stage** (:func:`dataforge.generate.instructions.request_plan`): its
  request counts are upper bounds (Self-Instruct stops once it has kept ``count`` tasks; a
  filtered task or query, or a failed evolution, gets no answer). Prompts known before any reply
  are rebuilt exactly (Self-Instruct's first round, Evol-Instruct's first round, the Magpie
  prefix, sent to the completions endpoint without a chat template) and only those are looked up
  in the cache; the rest are approximated (seed tasks stand in for generated ones and for evolved
  parents; every answer's prompt is an instruction of the seeds' mean length). Reply lengths are
  per purpose: ``estimate.completion_tokens["instructions.<purpose>"]``, else
  ``["instructions"]``, else the purpose's ``max_tokens``; ``--estimate-sample`` samples the
  known requests and answers a few of the instructions they return (requests the run will send
  if those instructions are kept).
* **The judge** rates rows that curation kept, which nothing can know before the run: its rows
  are the generated rows times ``estimate.judge_rows`` (1: every one, an upper bound), its
  prompts the AlpaGasus template around each row's question and expected reply.

Nothing here starts Prefect or opens a run; without ``--estimate-sample`` no request is sent
and no teacher is started.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataforge.config import ConfigError, PipelineConfig
from dataforge.teacher.cache import request_key

__all__ = [
    "Estimate",
    "PromptCounter",
    "Request",
    "StageEstimate",
    "estimate_run",
    "format_estimate",
    "plan_requests",
    "prompt_counter",
]

log = logging.getLogger("dataforge.estimate")

# chat-template tokens per message and for the reply's header when no tokenizer is at hand
# (OpenAI's cookbook counts 3 a message and 3 to prime the reply)
TEMPLATE_TOKENS_PER_MESSAGE = 3
TEMPLATE_TOKENS_REPLY = 3


@dataclass
class Request:
    """One teacher request as its stage would send it: what decides its cache key and its size."""

    stage: str
    messages: list[dict]
    temperature: float
    max_tokens: int
    top_p: float | None = None
    seed: int | None = None
    sample_index: int = 0
    kind: str | None = None  # the row kind it yields (the judge's apply_to)
    structured: bool = False  # the judge's structured request (its key is not predicted)
    purpose: str | None = None  # within a stage of several kinds of request (instructions: request_plan's names)
    prompt: str | None = None  # a completions-endpoint request (Magpie): the raw prompt, no messages
    stop: list[str] | None = None
    known: bool = True  # the request is exactly what the run sends (else approximated: never looked up)
    stand_ins: list[list[dict]] | None = None  # its prompt is sized as the mean of these (unknown text)

    @property
    def group(self) -> str:
        """What reply lengths are kept apart by: the stage, or ``stage.purpose``."""
        return f"{self.stage}.{self.purpose}" if self.purpose else self.stage

    def params(self, logprobs: int | None = None) -> dict:
        """The request's parameters as the client keys them (``TeacherClient.complete``)."""
        values = {"temperature": self.temperature, "max_tokens": self.max_tokens, "top_p": self.top_p,
                  "seed": self.seed}
        out = {k: v for k, v in values.items() if v is not None}
        if self.prompt is not None:  # TeacherClient.complete_text: the prompt and stops, no logprobs
            out["prompt"] = self.prompt
            if self.stop:
                out["stop"] = list(self.stop)
            return out
        if logprobs:
            try:
                from dataforge.teacher.logprobs import request_params
            except ImportError:  # pragma: no cover - a tree without distillation signals
                return out
            out.update(request_params(logprobs))
        return out


@dataclass
class StageEstimate:
    stage: str
    requests: int = 0
    cached: int = 0
    prompt_tokens: int = 0  # of the requests to send
    completion_tokens: int = 0  # of the requests to send
    cost_usd: float = 0.0
    replies: str = ""  # where the reply length came from
    notes: list[str] = field(default_factory=list)

    @property
    def to_send(self) -> int:
        return self.requests - self.cached

    def as_dict(self) -> dict:
        return {"stage": self.stage, "requests": self.requests, "cached": self.cached, "to_send": self.to_send,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cost_usd": round(self.cost_usd, 8), "replies": self.replies, "notes": list(self.notes)}


@dataclass
class Estimate:
    stages: list[StageEstimate]
    prompt_counter: str
    price: str
    sampled: dict = field(default_factory=dict)  # what --estimate-sample sent
    notes: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(s.requests for s in self.stages)

    @property
    def cached(self) -> int:
        return sum(s.cached for s in self.stages)

    @property
    def prompt_tokens(self) -> int:
        return sum(s.prompt_tokens for s in self.stages)

    @property
    def completion_tokens(self) -> int:
        return sum(s.completion_tokens for s in self.stages)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost_usd(self) -> float:
        return sum(s.cost_usd for s in self.stages)

    def as_dict(self) -> dict:
        return {"stages": [s.as_dict() for s in self.stages],
                "total": {"requests": self.requests, "cached": self.cached, "to_send": self.requests - self.cached,
                          "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                          "cost_usd": round(self.cost_usd, 8)},
                "prompt_counter": self.prompt_counter, "price": self.price, "sampled": self.sampled,
                "notes": list(self.notes)}


# --------------------------------------------------------------------------- the plan


def _textbook_requests(cfg: PipelineConfig) -> list[Request]:
    from dataforge.generate.textbooks import (
        load_textbook_sources,
        plan_textbooks,
        response_seed,
        textbook_messages,
    )

    t = cfg.textbooks
    sources = load_textbook_sources(t, cfg.resolve_path)
    cells = plan_textbooks(sources, t.max_samples, cfg.seed)
    # generate_textbooks: response k of cell i has seed response_seed(...) and sample_index k
    return [Request("textbooks", textbook_messages(cell, sources)[1], t.temperature, t.max_tokens, t.top_p,
                    response_seed(cfg.seed, i, k, len(cells)), k, kind="textbook")
            for k in range(t.responses_per_cell) for i, cell in enumerate(cells)]


def _cot_seeds(cfg: PipelineConfig) -> list:
    from dataforge.generate.seeds import load_seeds

    seeds, _bad = load_seeds([cfg.resolve_path(p) for p in cfg.cot.seed_paths()], cfg.cot.seed_format,
                             cfg.cot.question_field, cfg.cot.answer_field)
    return seeds[: cfg.cot.max_questions] if cfg.cot.max_questions else seeds


def _cot_requests_for(cfg: PipelineConfig, seeds: Sequence, stage: str = "cot") -> list[Request]:
    from dataforge.generate.cot import (
        choose_system_prompt,
        cot_messages,
        methods_of,
        pot_messages,
    )

    c = cfg.cot
    out: list[Request] = []
    for s in seeds:  # generate_cot: seeds x methods x samples, seed + k, sample_index k
        for method in methods_of(c):
            for k in range(c.samples_per_question):
                if method == "pot":
                    messages = pot_messages(s.question, s.answer_type, s.options)
                else:
                    prompt = choose_system_prompt(c.system_prompts, cfg.seed, s.question, k)
                    messages = cot_messages(s.question, prompt, s.answer_type, s.options)
                out.append(Request(stage, messages, c.temperature, c.max_tokens, c.top_p, cfg.seed + k, k, kind="cot"))
    return out


def _synthesis_requests(cfg: PipelineConfig, seeds: Sequence) -> tuple[list[Request], list]:
    from dataforge.generate.synthesis import plan_parents, synthesis_messages

    sc = cfg.cot.synthesis
    plan = plan_parents(seeds, sc, cfg.seed)
    reqs = [Request("synthesis", synthesis_messages(p, e), sc.temperature, sc.max_tokens, sc.top_p,
                    cfg.seed + 7919 * (v + 1), v) for p, e, v in plan]
    return reqs, [p for p, _e, _v in plan]


def _instruction_requests(cfg: PipelineConfig) -> tuple[list[Request], list[str]]:
    """The instructions stage's requests, as many as :func:`request_plan` bounds by purpose.
    Rebuilt exactly where nothing depends on a reply (Self-Instruct's first round: every request
    of a round is built before any answer; Evol-Instruct's first round: the parents are the seed
    tasks; Magpie's queries: the prefix); approximated, and never looked up in the cache, where
    the prompt holds the teacher's earlier replies."""
    import random

    from dataforge.generate.instructions import (
        EVOL_EQUAL_PROMPT,
        MAGPIE_STOPS,
        answer_seed,
        evol_messages,
        evol_operation,
        load_instruction_seeds,
        magpie_prefix,
        request_plan,
        self_instruct_messages,
    )
    from dataforge.stages.instructions import check_magpie, seed_path

    check_magpie(cfg)  # a config the run refuses is refused here too, with the same one line
    ic, seed = cfg.instructions, cfg.seed
    sc, ec, mc, n = ic.self_instruct, ic.evol_instruct, ic.magpie, ic.answers_per_instruction
    seeds, _bad = load_instruction_seeds(seed_path(cfg))
    plan = request_plan(ic)
    count = {k: v["requests"] for k, v in plan.items()}
    # an answer's prompt is the kept instruction alone, unknown before the run: sized as the
    # mean of the seed tasks' (a judge estimate reads the cycled seed as its question)
    stand_ins = [[{"role": "user", "content": s.instruction}] for s in seeds]
    reqs: list[Request] = []

    def answers(purpose: str, instructions: int) -> None:
        for i in range(instructions):
            for k in range(n):
                reqs.append(Request("instructions", stand_ins[i % len(seeds)], ic.answer_temperature,
                                    ic.answer_max_tokens, ic.answer_top_p, answer_seed(seed, k), k, kind="instruction",
                                    purpose=purpose, known=False, stand_ins=stand_ins))

    first_round = min(sc.requests_per_round, count.get("self_instruct", 0))
    for j in range(count.get("self_instruct", 0)):  # generate_self_instruct's prompts
        rng = random.Random(f"{seed}:self_instruct:{j}")
        examples = [s.instruction for s in rng.sample(list(seeds), min(sc.seed_examples, len(seeds)))]
        if j >= first_round:  # later rounds show generated tasks too: seed tasks stand in for them
            examples += [s.instruction for s in rng.sample(list(seeds), min(sc.generated_examples, len(seeds)))]
        reqs.append(Request("instructions", self_instruct_messages(examples, sc.new_per_request), sc.temperature,
                            sc.max_tokens, sc.top_p, seed + j, 0, purpose="self_instruct", known=j < first_round))
    answers("self_instruct_answers", sc.count)

    chains = [seeds[i % len(seeds)] for i in range(ec.count)]
    for rnd in range(1, ec.rounds + 1):  # generate_evol: a chain's parent is its seed until it evolves
        for i, root in enumerate(chains):
            op = evol_operation(seed, i, rnd, ec.operations)
            reqs.append(Request("instructions", evol_messages(root.instruction, op), ec.temperature, ec.max_tokens,
                                ec.top_p, seed + i * 100 + rnd, 0, purpose="evol_instruct", known=rnd == 1))
    answers("evol_instruct_answers", ec.count * ec.rounds)
    for i in range(count.get("evol_equality", 0)):
        root = chains[i % len(chains)].instruction
        reqs.append(Request("instructions", [{"role": "user", "content": EVOL_EQUAL_PROMPT.format(
            parent=root, evolved=root)}], 0.0, 8, None, seed, 0, purpose="evol_equality", known=False))

    prefix, stops = magpie_prefix(mc), MAGPIE_STOPS[mc.template]
    for i in range(mc.count):  # generate_magpie (query 0 is check_completions_endpoint's, the same request)
        reqs.append(Request("instructions", [], mc.temperature, mc.max_tokens, mc.top_p, seed + i, 0,
                            purpose="magpie", prompt=prefix, stop=list(stops)))
    answers("magpie_answers", mc.count)

    exact = [f"Self-Instruct's first round ({first_round} requests)"] if first_round else []
    if ec.count:
        exact.append(f"Evol-Instruct's first round ({ec.count} requests)")
    if mc.count:
        exact.append(f"the Magpie prefix ({mc.count} completions requests, no chat template)")
    approx = [what for what, on in (
        ("later Self-Instruct rounds (seed tasks stand in for the generated ones they show)",
         count.get("self_instruct", 0) > first_round),
        ("later evolutions (the root seed stands in for its evolved parent, which is usually longer)", ec.rounds > 1),
        ("the equality checks (the root seed as parent and evolved)", count.get("evol_equality", 0)),
        ("every answer (an instruction of the seed tasks' mean length)", True)) if on]
    notes = [
        "instructions: requests are upper bounds by purpose (" + ", ".join(f"{k} {v}" for k, v in count.items())
        + "): Self-Instruct stops once it has kept its count, and a filtered task or query or a failed evolution "
        "gets no answer",
        "instructions: prompts rebuilt exactly: " + ("; ".join(exact) or "none") + "; approximated: "
        + "; ".join(approx) + "; only the exact ones are looked up in the cache, the rest count as to send",
    ]
    return reqs, notes


def plan_requests(cfg: PipelineConfig) -> tuple[dict[str, list[Request]], list[str]]:
    """Every generation request the config would send, by stage (``textbooks``, ``synthesis``,
    ``cot``, ``instructions``), rebuilt as the stages build them (or approximated, ``known``
    False); and notes on what could not be planned."""
    from dataforge.stages.registry import GENERATION, enabled

    plans: dict[str, list[Request]] = {}
    notes: list[str] = []
    for st in enabled(cfg, GENERATION):
        if not st.teacher:
            continue
        if st.name == "textbooks":
            plans["textbooks"] = _textbook_requests(cfg)
        elif st.name == "cot":
            seeds = _cot_seeds(cfg)
            if cfg.cot.synthesis.enabled:
                synth, parents = _synthesis_requests(cfg, seeds)
                plans["synthesis"] = synth
                # the questions synthesis will add are unknown: one per request (an upper bound),
                # each sized like its parent question
                extra = _cot_requests_for(cfg, parents, "cot")
                for r in extra:
                    r.seed, r.sample_index = None, -1  # not predictable: never found in the cache
                plans["cot"] = _cot_requests_for(cfg, seeds) + extra
                notes.append(f"cot: {len(extra)} requests for synthesized questions assume every synthesis request "
                             "yields a kept question (an upper bound), sized like its parent")
            else:
                plans["cot"] = _cot_requests_for(cfg, seeds)
        elif st.name == "instructions":
            plans["instructions"], more = _instruction_requests(cfg)
            notes.extend(more)
        else:
            notes.append(f"{st.name}: asks the teacher but has no estimate (not counted)")
    return plans, notes


# --------------------------------------------------------------------------- counting prompts


class PromptCounter:
    """Prompt tokens of a chat request: characters / ``chars_per_token`` plus the template's tokens."""

    name = "characters"

    def __init__(self, chars_per_token: float) -> None:
        self.chars_per_token = chars_per_token
        self.scale = 1.0  # corrected by sampled requests (measured / counted)

    @property
    def describe(self) -> str:
        text = (f"estimated at {self.chars_per_token:g} characters a token plus {TEMPLATE_TOKENS_PER_MESSAGE} a "
                "message (no tokenizer of the teacher available locally)")
        if self.scale != 1.0:
            text += f", scaled by {self.scale:.3f} from the sampled requests' measured prompt tokens"
        return text

    def raw(self, messages: list[dict]) -> int:
        chars = sum(len(m.get("content") or "") for m in messages)
        return math.ceil(chars / self.chars_per_token) + TEMPLATE_TOKENS_PER_MESSAGE * len(messages) \
            + TEMPLATE_TOKENS_REPLY

    def count(self, messages: list[dict]) -> int:
        return round(self.raw(messages) * self.scale)

    def text(self, text: str) -> int:
        """Tokens of a bare piece of text (a reply inside the judge's prompt)."""
        return math.ceil(len(text) / self.chars_per_token)


class GgufPromptCounter(PromptCounter):
    """The embedded teacher's own count: its GGUF's chat template and vocabulary (llama-cpp-python
    loads the vocabulary only, in a tenth of a second)."""

    name = "tokenizer"

    def __init__(self, model_path: str) -> None:
        super().__init__(4.0)
        from llama_cpp import Llama
        from llama_cpp._utils import suppress_stdout_stderr
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        with suppress_stdout_stderr(disable=False):  # llama.cpp's C code prints on load
            self._llama = Llama(model_path=model_path, vocab_only=True, verbose=False)
        meta = self._llama.metadata
        template = meta.get("tokenizer.chat_template")
        if not template:
            raise ValueError("the GGUF has no chat template")

        def token_text(key: str) -> str:
            tid = int(meta.get(key, -1))
            return self._llama._model.token_get_text(tid) if tid >= 0 else ""

        self._fmt = Jinja2ChatFormatter(template=template, eos_token=token_text("tokenizer.ggml.eos_token_id"),
                                        bos_token=token_text("tokenizer.ggml.bos_token_id"))
        self._path = model_path

    @property
    def describe(self) -> str:
        return f"counted with the teacher's tokenizer (the GGUF's vocabulary and chat template: {Path(self._path).name})"

    def _tokens(self, text: str, add_bos: bool) -> int:
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    def raw(self, messages: list[dict]) -> int:
        prompt = self._fmt(messages=messages).prompt
        return self._tokens(prompt, add_bos=False)

    def text(self, text: str) -> int:
        return self._tokens(text, add_bos=False)


class TokenizerJsonCounter(PromptCounter):
    """A tokenizer.json of the teacher (``teacher.tokenizer``): content tokens plus the template's."""

    name = "tokenizer"

    def __init__(self, path: Path) -> None:
        super().__init__(4.0)
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(path))
        self._path = path

    @property
    def describe(self) -> str:
        return (f"counted with the teacher's tokenizer ({self._path.name}) plus {TEMPLATE_TOKENS_PER_MESSAGE} "
                "template tokens a message")

    def raw(self, messages: list[dict]) -> int:
        return sum(self.text(m.get("content") or "") for m in messages) \
            + TEMPLATE_TOKENS_PER_MESSAGE * len(messages) + TEMPLATE_TOKENS_REPLY

    def text(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False).ids)


def prompt_counter(cfg: PipelineConfig) -> PromptCounter:
    """The best prompt counter available here: the embedded teacher's GGUF, else
    ``teacher.tokenizer``, else the characters rule."""
    if cfg.teacher.provider == "local":
        try:
            from dataforge.teacher.local import find_gguf

            path = cfg.teacher.local.model_path or str(find_gguf())
            return GgufPromptCounter(str(cfg.resolve_path(path)) if cfg.teacher.local.model_path else path)
        except Exception as err:  # noqa: BLE001 - llama-cpp-python or the weights missing: fall back
            log.info("no local tokenizer for the embedded teacher (%s): counting characters", err)
    tok = getattr(cfg.teacher, "tokenizer", None)
    if tok:
        try:
            return TokenizerJsonCounter(cfg.resolve_path(tok))
        except Exception as err:  # noqa: BLE001
            log.info("teacher.tokenizer %s unusable (%s): counting characters", tok, err)
    return PromptCounter(cfg.estimate.chars_per_token)


# --------------------------------------------------------------------------- the cache, read-only


def cached_keys(cache_path: Path, keys: Sequence[str]) -> set[str]:
    """Which of ``keys`` the request cache holds, read-only (a missing cache holds none; the
    estimate never creates one)."""
    if not keys or not cache_path.is_file():
        return set()
    found: set[str] = set()
    conn = sqlite3.connect(f"file:{cache_path}?mode=ro", uri=True, timeout=30.0)
    try:
        keys = list(keys)
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            rows = conn.execute(f"SELECT key FROM requests WHERE key IN ({','.join('?' * len(chunk))})",
                                chunk).fetchall()
            found.update(r[0] for r in rows)
    except sqlite3.OperationalError as err:  # no table yet
        log.info("request cache %s unreadable (%s): nothing counted as cached", cache_path, err)
    finally:
        conn.close()
    return found


# --------------------------------------------------------------------------- sampling


def _spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)``."""
    if k >= n:
        return list(range(n))
    return sorted({int(i * n / k) for i in range(k)})


async def _sample(cfg: PipelineConfig, reqs: Sequence[Request], base_url: str | None) -> list[tuple[Request, Any]]:
    from dataforge.teacher import RequestCache, TeacherClient

    cache = RequestCache(cfg.teacher_cache_dir() / "teacher.sqlite")
    client = TeacherClient(cfg.teacher, cache, base_url=base_url)
    try:
        async def one(r: Request):
            if r.prompt is not None:
                return r, await client.complete_text(r.prompt, temperature=r.temperature, max_tokens=r.max_tokens,
                                                     top_p=r.top_p, seed=r.seed, stop=r.stop,
                                                     sample_index=r.sample_index)
            return r, await client.complete(r.messages, temperature=r.temperature, max_tokens=r.max_tokens,
                                            top_p=r.top_p, seed=r.seed, sample_index=r.sample_index)
        return list(await asyncio.gather(*(one(r) for r in reqs)))
    finally:
        await client.aclose()
        cache.close()


def _to_sample(plans: dict[str, list[Request]], sample: int) -> dict[str, list[Request]]:
    """The requests ``--estimate-sample`` sends, by reply-length group: ``sample`` spread over
    each stage's plan; for the instructions stage over each purpose's known requests only (an
    approximated one is not what the run sends, so the run could not reuse its answer)."""
    todo: dict[str, list[Request]] = {}
    for st, reqs in plans.items():
        if st != "instructions":
            if reqs:
                todo[st] = [reqs[i] for i in _spread(len(reqs), sample)]
            continue
        groups: dict[str, list[Request]] = {}
        for r in reqs:
            if r.known:
                groups.setdefault(r.group, []).append(r)
        for g, rs in groups.items():
            todo[g] = [rs[i] for i in _spread(len(rs), sample)]
    return todo


def _answer_samples(cfg: PipelineConfig, got: Sequence[tuple[Request, Any]], sample: int) -> list[Request]:
    """Answers to up to ``sample`` instructions per method that sampled generating requests
    returned: the first task of a Self-Instruct reply, an evolved instruction, a Magpie query —
    exactly the answer 0 the run sends if it keeps that instruction, so the run reuses it."""
    from dataforge.generate.instructions import (
        answer_seed,
        clean_magpie_query,
        parse_new_instructions,
    )

    ic = cfg.instructions
    out: dict[str, list[Request]] = {}
    for r, c in got:
        if r.stage != "instructions" or r.purpose not in ("self_instruct", "evol_instruct", "magpie"):
            continue
        if r.purpose == "self_instruct":
            texts = parse_new_instructions(c.text)[:1]
        elif r.purpose == "evol_instruct":
            texts = [c.text.strip()]
        else:
            texts = [clean_magpie_query(c.text, ic.magpie)]
        group = out.setdefault(f"{r.purpose}_answers", [])
        for text in texts:
            if text and len(group) < sample:
                group.append(Request("instructions", [{"role": "user", "content": text}], ic.answer_temperature,
                                     ic.answer_max_tokens, ic.answer_top_p, answer_seed(cfg.seed, 0), 0,
                                     kind="instruction", purpose=f"{r.purpose}_answers"))
    return [r for rs in out.values() for r in rs]


# --------------------------------------------------------------------------- the estimate


def _expected(cfg: PipelineConfig, stage: str, max_tokens: int) -> tuple[int, str]:
    """The stated reply length of a group (``stage`` or ``stage.purpose``): its own entry in
    ``estimate.completion_tokens``, else its stage's, else ``max_tokens``."""
    stated_for = cfg.estimate.completion_tokens
    for key in dict.fromkeys((stage, stage.split(".", 1)[0])):
        stated = stated_for.get(key)
        if stated is not None:
            return stated, f"stated: {stated} a reply (estimate.completion_tokens.{key})"
    return max_tokens, f"stated: max_tokens {max_tokens} a reply (an upper bound)"


def _prompt_tokens(counter: PromptCounter, r: Request, memo: dict[int, int]) -> int:
    """A request's prompt tokens: the raw prompt of a completions request (no chat template),
    the mean of its stand-ins (counted once), else its messages."""
    if r.prompt is not None:
        return counter.text(r.prompt)
    if r.stand_ins:
        if id(r.stand_ins) not in memo:
            memo[id(r.stand_ins)] = round(sum(counter.count(m) for m in r.stand_ins) / len(r.stand_ins))
        return memo[id(r.stand_ins)]
    return counter.count(r.messages)


def estimate_run(cfg: PipelineConfig, sample: int = 0, base_url: str | None = None,
                 start_teacher: Callable[[], Any] | None = None) -> Estimate:
    """The estimate for ``cfg`` (see the module docstring). ``sample`` > 0 sends that many real
    requests per generation stage (through the cache, so the run reuses them); ``start_teacher``
    is a context manager factory yielding the base URL (the embedded teacher), used only then."""
    if sample < 0:
        raise ConfigError(f"--estimate-sample must be >= 0, got {sample}")
    plans, notes = plan_requests(cfg)
    counter = prompt_counter(cfg)
    model = cfg.teacher.model
    logprobs = getattr(cfg.teacher, "logprobs", None)
    cache_path = cfg.teacher_cache_dir() / "teacher.sqlite"
    keys = {id(r): request_key(model, r.messages, r.params(logprobs), r.sample_index)
            for reqs in plans.values() for r in reqs if r.known}
    held = cached_keys(cache_path, list(keys.values()))
    batch = cfg.teacher.mode == "batch"

    def price(p: int, c: int) -> float:
        return cfg.teacher.cost_usd(p, c, batch=batch)

    # sampled reply lengths (and prompt scale) per stage
    measured: dict[str, tuple[float, int]] = {}
    sampled_info: dict = {}
    if sample > 0:
        todo = _to_sample(plans, sample)
        flat = [r for rs in todo.values() for r in rs]
        if flat:
            def send(url: str | None) -> list[tuple[Request, Any]]:
                got = asyncio.run(_sample(cfg, flat, url))
                follow = _answer_samples(cfg, got, sample)  # instructions: answers need an instruction first
                return got + (asyncio.run(_sample(cfg, follow, url)) if follow else [])

            ctx = start_teacher() if start_teacher is not None else None
            if ctx is not None:
                with ctx as url:
                    answers = send(url or base_url)
            else:
                answers = send(base_url)
            counted = measured_prompt = 0
            for st in dict.fromkeys(r.group for r, _c in answers):
                got = [c for r, c in answers if r.group == st]
                measured[st] = (sum(c.completion_tokens for c in got) / len(got), len(got))
            for r, c in answers:
                if c.prompt_tokens and r.prompt is None:  # the scale is of chat prompts only
                    counted += counter.raw(r.messages)
                    measured_prompt += c.prompt_tokens
            if counter.name == "characters" and counted and measured_prompt:
                counter.scale = measured_prompt / counted
            sent = [c for _r, c in answers if not c.cached]
            sampled_info = {"requests": len(answers), "sent": len(sent),
                            "tokens": sum(c.prompt_tokens + c.completion_tokens for c in sent),
                            "cost_usd": round(sum(c.cost_usd for c in sent), 8)}
            held |= cached_keys(cache_path, list(keys.values()))  # the sampled ones are cached now

    stages: list[StageEstimate] = []
    reply_tokens: dict[str, int] = {}
    memo: dict[int, int] = {}
    for st, reqs in plans.items():
        e = StageEstimate(st, requests=len(reqs))
        per_group: dict[str, tuple[int, str]] = {}
        for r in reqs:
            if r.group not in per_group:
                if r.group in measured:
                    mean, n = measured[r.group]
                    per_group[r.group] = (round(mean), f"sampled: mean {mean:.1f} tokens over {n} replies")
                else:
                    per_group[r.group] = _expected(cfg, r.group, r.max_tokens)
            if keys.get(id(r)) in held:
                e.cached += 1
                continue
            e.prompt_tokens += _prompt_tokens(counter, r, memo)
            e.completion_tokens += min(per_group[r.group][0], r.max_tokens)
        if not per_group:
            per_group[st] = _expected(cfg, st, 0)
        reply_tokens.update({g: v[0] for g, v in per_group.items()})
        reply_tokens.setdefault(st, next(iter(per_group.values()))[0])
        if list(per_group) == [st]:
            e.replies = per_group[st][1]
        else:  # by purpose
            e.replies = "; ".join(f"{g.split('.', 1)[-1]}: {d}" for g, (_n, d) in per_group.items())
        if st == "instructions":
            e.notes.append("requests are upper bounds, prompts partly approximated (see the notes below)"
                           + (f"; an answer's prompt is sized as a seed task's mean, {next(iter(memo.values()))} "
                              "tokens" if memo else ""))
        e.cost_usd = price(e.prompt_tokens, e.completion_tokens)
        stages.append(e)

    if cfg.judge.enabled:
        stages.append(_judge_estimate(cfg, plans, reply_tokens, counter, price))

    p = cfg.teacher.price_for()
    if p is None:
        price_text = f"teacher model {model!r} has no price in teacher.prices: 0 USD (a local model is free)"
    else:
        price_text = (f"{model}: ${p.input_per_mtok:g} / ${p.output_per_mtok:g} per million prompt / reply tokens"
                      + (f", less the batch discount {cfg.teacher.batch_discount:g}" if batch else ""))
    if cfg.teacher.budget_usd is not None:
        notes.append(f"teacher.budget_usd ${cfg.teacher.budget_usd:g}: the run stops cleanly before passing it")
    return Estimate(stages, counter.describe, price_text, sampled_info, notes)


def _judge_estimate(cfg: PipelineConfig, plans: dict[str, list[Request]], reply_tokens: dict[str, int],
                    counter: PromptCounter, price: Callable[[int, int], float]) -> StageEstimate:
    """The judge's requests: the generated rows of its ``apply_to`` kinds times
    ``estimate.judge_rows``, each the AlpaGasus prompt around the row's question and reply."""
    from dataforge.select.judge import Triplet, judge_messages

    j = cfg.judge
    structured = j.output in ("auto", "structured")
    e = StageEstimate("judge")
    per_reply, e.replies = _expected(cfg, "judge", j.max_tokens)
    share = cfg.estimate.judge_rows
    rows: list[Request] = [r for st in ("textbooks", "cot", "instructions") for r in plans.get(st, [])
                           if r.kind in j.apply_to]
    empty = counter.count(judge_messages(Triplet("", "", ""), j.rubric, structured))
    prompt_total = 0
    for r in rows:
        user = next((m.get("content") or "" for m in reversed(r.messages) if m.get("role") == "user"), "")
        # render_row judges the last user turn (the textbook prompt, the CoT question) and the reply
        prompt_total += empty + counter.text(user) + reply_tokens.get(r.group, reply_tokens.get(r.stage,
                                                                                                r.max_tokens))
    e.requests = math.ceil(len(rows) * share)
    e.prompt_tokens = round(prompt_total * share)
    e.completion_tokens = e.requests * min(per_reply, j.max_tokens)
    e.cost_usd = price(e.prompt_tokens, e.completion_tokens)
    e.notes.append(f"judge rows estimated as {share:g} x the {len(rows)} generated rows of kinds "
                   f"{', '.join(j.apply_to)} (curation decides the real count; estimate.judge_rows); "
                   "the cache is not consulted for them")
    return e


def format_estimate(est: Estimate, config: str) -> list[str]:
    """The estimate as the lines ``dataforge run --estimate`` prints."""
    lines = [f"estimate for {config}: no request sent" if not est.sampled else
             f"estimate for {config}: sampled {est.sampled['requests']} requests "
             f"({est.sampled['sent']} sent: {est.sampled['tokens']:,} tokens, ${est.sampled['cost_usd']:.6f})"]
    head = f"{'stage':<12} {'requests':>8} {'cached':>7} {'to send':>8} {'prompt tok':>11} {'reply tok':>10} {'cost USD':>11}"
    lines.append(head)
    for s in est.stages:
        lines.append(f"{s.stage:<12} {s.requests:>8,} {s.cached:>7,} {s.to_send:>8,} {s.prompt_tokens:>11,} "
                     f"{s.completion_tokens:>10,} {s.cost_usd:>11.6f}")
    lines.append(f"{'total':<12} {est.requests:>8,} {est.cached:>7,} {est.requests - est.cached:>8,} "
                 f"{est.prompt_tokens:>11,} {est.completion_tokens:>10,} {est.cost_usd:>11.6f}")
    lines.append(f"prompt tokens: {est.prompt_counter}")
    for s in est.stages:
        lines.append(f"reply tokens, {s.stage}: {s.replies}")
        lines.extend(f"  {n}" for n in s.notes)
    lines.append(f"price: {est.price}")
    lines.extend(est.notes)
    return lines
