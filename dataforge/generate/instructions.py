"""Instruction-tuning pairs from the teacher: Self-Instruct, Evol-Instruct and Magpie.

* **Self-Instruct** (Wang et al. 2023, arXiv:2212.10560): a request shows the teacher a few
  sampled seed tasks and tasks it wrote before and asks for new ones; a new task is kept when its
  ROUGE-L to every task so far is below 0.7, it has a usable length and names nothing a language
  model cannot do (images, files, plots). The pool grows between rounds of requests.
* **Evol-Instruct** (WizardLM, Xu et al. 2023, arXiv:2304.12244): a seed instruction is
  rewritten by an in-depth operation (add constraints, deepen, concretize, more reasoning steps,
  complicate the input) or the in-breadth one (a new, rarer instruction of the same domain), round
  after round. A failed evolution is eliminated by WizardLM's rules (no information gain over its
  parent; a "sorry" reply under 80 words; a reply of only punctuation and stop words; an
  instruction that copies the evolving prompt's words such as "#Rewritten Prompt#") and its
  parent evolves again next round.
* **Magpie** (Xu et al. 2024, arXiv:2406.08464): only the chat template's pre-query user prefix
  (ChatML: ``<|im_start|>user\\n``) goes to the completions endpoint, so the aligned model writes
  a user query itself; the chat endpoint then answers it.

Every kept instruction is answered by the teacher through the chat endpoint,
``answers_per_instruction`` times (``sample_index`` k, seed + k: distinct requests, so the judge's
scores give preference pairs between answers to one prompt); each row is kind ``instruction`` with
``messages`` (user, assistant) and ``text`` = instruction + answer, as the ingest stage maps
instruction rows. Provenance: ``method`` (``self_instruct``,
``evol_instruct``, ``magpie``), ``template`` (the prompt used), ``seed_id`` (the root seed),
``parent_seed_id`` (the evolved instruction's parent), ``topic`` (the seed's category),
``gen_params`` (temperatures, the evolution round and operation, the in-context examples).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from dataforge.config import ConfigError, EvolInstructConfig, InstructionsConfig, MagpieConfig, SelfInstructConfig
from dataforge.curate.diversity_metrics import distinct_n
from dataforge.errors import DataforgeError
from dataforge.records import make_sample
from dataforge.select.preference import prompt_key
from dataforge.tabular import InputError, Quarantined, iter_json_lines
from dataforge.teacher import TeacherClient, TeacherError
from dataforge.teacher.client import Completion, answered_at
from dataforge.teacher.urls import redact_url

log = logging.getLogger("dataforge.instructions")

SHIPPED_SEEDS = "instruction_seeds.jsonl"
METHODS = ("self_instruct", "evol_instruct", "magpie")


class MagpieUnavailable(DataforgeError):
    """The teacher has no completions endpoint, which Magpie needs."""


# --- ROUGE-L (Lin 2004), as rouge_score's rougeL without stemming: Self-Instruct's filter ----------

_TOKEN = re.compile(r"[a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """rouge_score's default tokenization: lower case, runs of letters and digits."""
    return _TOKEN.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (one row of the DP table at a time)."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(a: Sequence[str], b: Sequence[str]) -> float:
    """ROUGE-L F-measure of two token lists (symmetric); 0 when either is empty."""
    if not a or not b:
        return 0.0
    lcs = lcs_length(a, b)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


def max_rouge_l(tokens: Sequence[str], pool: Sequence[Sequence[str]]) -> tuple[float, int]:
    """The highest ROUGE-L of ``tokens`` against ``pool`` and its index (-1 for an empty pool).
    A pool entry that shares no word cannot score above 0, so it is skipped cheaply."""
    best, at = 0.0, -1
    words = set(tokens)
    for i, other in enumerate(pool):
        if words.isdisjoint(other):
            continue
        s = rouge_l(tokens, other)
        if s > best:
            best, at = s, i
    return best, at


# --- seed tasks ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SeedTask:
    seed_id: str
    instruction: str  # with its input, when it has one
    category: str | None
    source: str


def _prompt_of(instruction: str, inp: str) -> str:
    return instruction.strip() + (f"\n\n{inp.strip()}" if inp.strip() else "")


def default_seed_path() -> Path:
    return Path(str(resources.files("dataforge.generate") / SHIPPED_SEEDS))


def load_instruction_seeds(path: str | Path | None = None) -> tuple[list[SeedTask], list[Quarantined]]:
    """Seed tasks from JSON lines: ``instruction`` (required), optional ``input``, ``id``,
    ``category``; Self-Instruct's own seed file (``instances: [{input, output}]``) loads too.
    Malformed lines are quarantined; a missing file or one with no usable task is a ConfigError."""
    p = Path(path) if path else default_seed_path()
    if not p.is_file():
        raise ConfigError(f"instructions.seeds: seed file not found: {p}")
    tasks: list[SeedTask] = []
    bad: list[Quarantined] = []
    seen_ids: dict[str, int] = {}
    seen_text: dict[str, int] = {}
    try:
        lines = list(iter_json_lines(p))
    except InputError as err:
        raise ConfigError(f"instructions.seeds: {err}") from None
    def reject(lineno: int, raw: str, reason: str) -> None:
        bad.append(Quarantined(str(p), lineno, reason, raw))
        log.warning("%s line %d: %s (quarantined)", p, lineno, reason)

    for lineno, obj, err, raw in lines:
        if obj is None:
            reject(lineno, raw, err or "unreadable")
            continue
        if not isinstance(obj, dict):
            reject(lineno, raw, f"expected a JSON object, got {type(obj).__name__}")
            continue
        instruction = obj.get("instruction")
        if not isinstance(instruction, str) or not instruction.strip():
            reject(lineno, raw, "missing or empty string field 'instruction'")
            continue
        inp = obj.get("input")
        instances = obj.get("instances")
        if inp is None and isinstance(instances, list) and instances and isinstance(instances[0], dict):
            inp = instances[0].get("input")
        if inp is not None and not isinstance(inp, str):
            reject(lineno, raw, "field 'input' is not a string")
            continue
        text = _prompt_of(instruction, inp or "")
        sid = obj.get("id")
        if sid is None:
            sid = hashlib.sha256(text.encode()).hexdigest()[:12]
        elif isinstance(sid, bool) or not isinstance(sid, (str, int)) or not str(sid).strip():
            reject(lineno, raw, "field 'id' is not a string or integer")
            continue
        sid = str(sid).strip()
        if sid in seen_ids:
            reject(lineno, raw, f"duplicate id {sid!r} (first on line {seen_ids[sid]})")
            continue
        if text in seen_text:
            reject(lineno, raw, f"duplicate instruction (first on line {seen_text[text]})")
            continue
        seen_ids[sid], seen_text[text] = lineno, lineno
        category = obj.get("category")
        tasks.append(SeedTask(sid, text, category if isinstance(category, str) and category.strip() else None,
                              p.name))
    if not tasks:
        first = "; ".join(f"line {q.line}: {q.reason}" for q in bad[:3])
        raise ConfigError(f"instructions.seeds: {p}: no usable seed task"
                          + (f" ({len(bad)} quarantined — {first})" if bad else " (the file is empty)"))
    return tasks, bad


# --- prompts ---------------------------------------------------------------------------------------

SELF_INSTRUCT_TEMPLATE = "self_instruct_v1"
SELF_INSTRUCT_PROMPT = (
    "Come up with {n} new, diverse tasks that a person could ask an AI assistant to do. Make them "
    "different from the examples: other topics, other kinds of task (writing, math, coding, advice, "
    "classification, explanation, ...), some with an input to work on. Write one task per line, "
    "numbered from {first}, and nothing else.\n\n{examples}"
)

# WizardLM's prompts (Xu et al. 2023, appendix A), lightly shortened; {method} is the operation
_EVOL_DEPTH = (
    "I want you to act as a Prompt Rewriter.\n"
    "Your objective is to rewrite a given prompt into a more complex version to make famous AI systems "
    "a bit harder to handle. But the rewritten prompt must be reasonable and must be understood and "
    "responded to by humans.\n"
    "You SHOULD complicate the given prompt using the following method:\n{method}\n"
    "You should try your best not to make the rewritten prompt verbose: it can only add 10 to 20 words "
    "to the given prompt. Reply with the rewritten prompt only.\n\n"
    "#Given Prompt#:\n{instruction}\n\n#Rewritten Prompt#:\n"
)
_EVOL_BREADTH = (
    "I want you to act as a Prompt Creator.\n"
    "Your goal is to draw inspiration from the #Given Prompt# to create a brand new prompt.\n"
    "This new prompt should belong to the same domain as the #Given Prompt# but be even more rare.\n"
    "The length and complexity of the #Created Prompt# should be similar to that of the #Given Prompt#.\n"
    "The #Created Prompt# must be reasonable and must be understood and responded to by humans. "
    "Reply with the created prompt only.\n\n"
    "#Given Prompt#:\n{instruction}\n\n#Created Prompt#:\n"
)
EVOL_METHODS = {
    "constraints": "Please add one more constraint or requirement into the #Given Prompt#.",
    "deepen": "If the #Given Prompt# contains inquiries about certain issues, the depth and breadth of the "
              "inquiry can be increased.",
    "concretize": "Please replace general concepts with more specific concepts.",
    "reasoning": "If the #Given Prompt# can be solved with just a few simple thinking processes, you can rewrite "
                 "it to explicitly request multiple-step reasoning.",
    "complicate_input": "Please add a piece of concrete input data (a table, a short text, a list of numbers or "
                        "a code snippet) that the rewritten prompt asks to work on.",
}
EVOL_EQUAL_PROMPT = (
    "Here are two Instructions to an AI assistant. Do you think they are equal to each other, which meet "
    "the following requirements:\n1. They have the same constraints and requirements.\n"
    "2. They have the same depth and breadth of the inquiry.\n"
    "The First Prompt: {parent}\nThe Second Prompt: {evolved}\n"
    "Your Judgement (Just answer: Equal or Not Equal. No need to explain the reason.):"
)
# WizardLM's fourth rule: the evolved prompt copies words from the evolving prompt
EVOL_COPIED = ("#given prompt#", "#rewritten prompt#", "#created prompt#", "given prompt", "rewritten prompt",
               "created prompt", "prompt rewriter", "prompt creator")

# the pre-query text of each chat template (Magpie): everything before the user's words, and the
# strings that end a user turn (the model writes one, then would start the assistant's)
MAGPIE_PREFIXES: dict[str, str] = {
    "chatml": "<|im_start|>user\n",
    "llama3": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n",
    "phi3": "<|user|>\n",
    "gemma": "<bos><start_of_turn>user\n",
    "mistral": "<s>[INST] ",
}
MAGPIE_STOPS: dict[str, list[str]] = {
    "chatml": ["<|im_end|>", "<|im_start|>"],
    "llama3": ["<|eot_id|>", "<|start_header_id|>"],
    "phi3": ["<|end|>", "<|assistant|>"],
    "gemma": ["<end_of_turn>", "<start_of_turn>"],
    "mistral": ["[/INST]", "</s>"],
}

# stop words for WizardLM's "only punctuation and stop words" rule (a short English list)
STOP_WORDS = frozenset(
    "a an the and or but if then of to in on at by for with from as is are was were be been am it its this that "
    "these those i you he she we they me him her us them my your our their what which who whom how why when where "
    "not no yes so do does did can could will would should may might must have has had there here all any some "
    "just only very too also ok okay".split())


def self_instruct_messages(examples: Sequence[str], n: int) -> list[dict]:
    lines = "\n".join(f"{i}. {' '.join(e.split())}" for i, e in enumerate(examples, 1))
    return [{"role": "user", "content": SELF_INSTRUCT_PROMPT.format(n=n, first=len(examples) + 1, examples=lines)}]


def evol_messages(instruction: str, operation: str) -> list[dict]:
    if operation == "breadth":
        text = _EVOL_BREADTH.format(instruction=instruction)
    else:
        text = _EVOL_DEPTH.format(method=EVOL_METHODS[operation], instruction=instruction)
    return [{"role": "user", "content": text}]


def magpie_prefix(cfg: MagpieConfig) -> str:
    return cfg.prefix if cfg.prefix is not None else MAGPIE_PREFIXES[cfg.template]


# --- parsing and filters ---------------------------------------------------------------------------

_NUMBERED = re.compile(r"^\s*(?:(?:task|instruction)\s*\d+\s*[:.)-]|\d+\s*[:.)]|[-*•])\s*(.*\S)\s*$", re.I)
_LABEL = re.compile(r"^\s*(?:task|instruction|new task)\s*:\s*", re.I)


def parse_new_instructions(reply: str) -> list[str]:
    """The tasks of a Self-Instruct reply: numbered (or bulleted) lines, a line that continues
    one joined to it; a reply without numbering is one task."""
    items: list[str] = []
    numbered = False
    for line in reply.splitlines():
        m = _NUMBERED.match(line)
        if m:
            numbered = True
            items.append(m.group(1).strip())
        elif line.strip() and numbered and items:
            items[-1] += "\n" + line.strip()
    if not numbered:
        text = _LABEL.sub("", reply.strip())
        items = [text] if text else []
    return [_LABEL.sub("", i).strip() for i in items if i.strip()]


def instruction_problem(text: str, cfg: SelfInstructConfig) -> str | None:
    """Self-Instruct's heuristic filters, before the similarity check: length, blocked words,
    starting with punctuation or a non-ASCII character."""
    words = text.split()
    if len(words) < cfg.min_words:
        return f"too_short({len(words)}<{cfg.min_words})"
    if len(words) > cfg.max_words:
        return f"too_long({len(words)}>{cfg.max_words})"
    low = " ".join(rouge_tokens(text))
    for w in cfg.blocked_words:
        if re.search(rf"\b{re.escape(w.lower())}\b", low):
            return f"blocked_word:{w}"
    if not text[0].isascii() or not text[0].isalnum() and text[0] not in "\"'(":
        return "bad_start"
    return None


def clean_magpie_query(text: str, cfg: MagpieConfig) -> str:
    """The user query a Magpie completion holds: cut at the first end-of-turn marker."""
    for stop in MAGPIE_STOPS.get(cfg.template, []) + ["<|im_end|>", "<|im_start|>", "<|endoftext|>"]:
        text = text.split(stop, 1)[0]
    return text.strip()


def evol_failure(parent: str, evolved: str, answer: str, cfg: EvolInstructConfig,
                 teacher_equal: bool | None = None) -> str | None:
    """WizardLM's elimination rules for a failed evolution (None: it succeeded).
    ``teacher_equal``: the teacher's verdict on parent and evolved (``no_gain_check: teacher``)."""
    low = evolved.lower()
    copied = next((w for w in EVOL_COPIED if w in low), None)
    if copied:
        return f"evol_copied_prompt:{copied.strip('#').replace(' ', '_')}"
    if teacher_equal is not None:
        if teacher_equal:
            return "evol_no_gain:teacher_equal"
    else:
        if " ".join(parent.split()).lower() == " ".join(evolved.split()).lower():
            return "evol_no_gain:identical"
        score = rouge_l(rouge_tokens(parent), rouge_tokens(evolved))
        if score >= cfg.max_parent_rouge_l:
            return f"evol_no_gain:rouge_l({score:.2f}>={cfg.max_parent_rouge_l})"
    words = answer.split()
    if "sorry" in answer.lower() and len(words) < cfg.sorry_max_words:
        return f"evol_sorry_reply({len(words)}<{cfg.sorry_max_words} words)"
    content = [t for t in rouge_tokens(answer) if t not in STOP_WORDS]
    if not content:
        return "evol_stop_words_only"
    return None


def parse_equal(reply: str) -> bool | None:
    """The teacher's verdict on WizardLM's equality prompt: True (equal), False, None (unclear)."""
    low = reply.strip().lower()
    if "not equal" in low:
        return False
    if re.search(r"\bequal\b", low):
        return True
    return None


# --- generation ------------------------------------------------------------------------------------

@dataclass
class Generated:
    """What one method produced: kept rows, rejected rows (with ``drop_reason``), request count."""

    rows: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    requests: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _completion_fields(c: Completion) -> dict:
    return {"request_hash": c.request_hash, "finish_reason": c.finish_reason, "created_at": answered_at(c),
            "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens, "cost_usd": c.cost_usd}


def _rejected(instruction: str, reason: str, common: dict, c: Completion | None = None) -> dict:
    msgs = [{"role": "user", "content": instruction}] if instruction else None
    row = make_sample("instruction", instruction, msgs, **common, **(_completion_fields(c) if c else {}))
    row["drop_reason"] = reason
    return row


def answer_seed(seed: int, k: int) -> int:
    """The seed of answer ``k`` (``sample_index`` k): the run seed plus k, as the cot stage seeds
    its samples, so answer 0 is the request a one-answer run sends."""
    return seed + k


async def answer_row(client: TeacherClient, instruction: str, cfg: InstructionsConfig, seed: int, common: dict,
                     k: int = 0) -> tuple[dict | None, dict | None, str]:
    """The teacher's answer ``k`` to ``instruction`` as a row (kept or with a drop reason), and
    the answer's text. The answer's request is the kept row's provenance; the generating
    request's cost is counted in the run's teacher stats. ``k`` is the row's ``sample_index``
    and part of the request (its seed and cache key), so the answers of one instruction differ."""
    params = {"temperature": cfg.answer_temperature, "top_p": cfg.answer_top_p, "max_tokens": cfg.answer_max_tokens}
    messages = [{"role": "user", "content": instruction}]
    gen = json.loads(common.get("gen_params") or "{}") if isinstance(common.get("gen_params"), str) else dict(
        common.get("gen_params") or {})
    answer = {**params, "seed": answer_seed(seed, k)}
    if cfg.answers_per_instruction > 1:  # what links the answers of one instruction (the preference group)
        answer |= {"of": cfg.answers_per_instruction, "prompt_key": prompt_key(messages)}
    common = {**common, "sample_index": k, "gen_params": {**gen, "answer": answer}}
    try:
        c = await client.complete(messages, seed=answer_seed(seed, k), sample_index=k, **params)
    except TeacherError as err:
        return None, _rejected(instruction, f"teacher_error:{err.reason}", common), ""
    text = c.text.strip()
    if not text:
        return None, _rejected(instruction, "empty_completion", common, c), ""
    msgs = messages + [{"role": "assistant", "content": text}]
    row = make_sample("instruction", f"{instruction}\n\n{text}", msgs, **common, **_completion_fields(c))
    return row, None, text


def _sort_answers(got: Sequence[tuple[dict | None, dict | None, str]], seen: set[str]
                  ) -> tuple[list[dict], list[dict]]:
    """(kept rows, rejected rows) of answers in sample order. An answer identical to an earlier
    one of the same instruction (``seen``: their ids) is dropped as ``duplicate_answer``: it would
    be the same row twice, and a pair needs two different responses."""
    kept, rejected = [], []
    for row, bad, _ in got:
        if row is None:
            rejected.append(bad)
        elif row["id"] in seen:
            row["drop_reason"] = "duplicate_answer"
            rejected.append(row)
        else:
            seen.add(row["id"])
            kept.append(row)
    return kept, rejected


async def answer_all(client: TeacherClient, instruction: str, cfg: InstructionsConfig, seed: int, common: dict,
                     first: int = 0, seen: set[str] | None = None) -> tuple[list[dict], list[dict]]:
    """Answers ``first``..n-1 (n: ``answers_per_instruction``) to one kept instruction, sent
    together: (kept rows, rejected rows). ``seen``: ids of answers already kept."""
    got = await asyncio.gather(*(answer_row(client, instruction, cfg, seed, common, k)
                                 for k in range(first, cfg.answers_per_instruction)))
    return _sort_answers(got, set(seen or ()))


def _base(client: TeacherClient, run_id: str | None, method: str, template: str, **extra: Any) -> dict:
    return {"teacher_model": client.cfg.model, "run_id": run_id, "method": method, "template": template,
            "sample_index": 0, **extra}


async def generate_self_instruct(client: TeacherClient, seeds: Sequence[SeedTask], cfg: InstructionsConfig, *,
                                 run_id: str | None = None, seed: int = 0,
                                 on_done: Callable[[], None] | None = None) -> Generated:
    """Self-Instruct: rounds of ``requests_per_round`` requests, each showing sampled seed and
    generated tasks; new tasks filtered (length, blocked words, ROUGE-L to the pool) in request
    order, so the result depends only on the seeds, the config and the teacher's answers."""
    sc = cfg.self_instruct
    out = Generated()
    pool = [s.instruction for s in seeds]
    pool_tokens = [rouge_tokens(t) for t in pool]
    generated: list[tuple[str, str]] = []  # (row key, instruction) of kept ones, for later prompts
    kept: list[tuple[str, dict]] = []  # (instruction, common fields)
    budget = self_instruct_budget(sc)
    params = {"temperature": sc.temperature, "top_p": sc.top_p, "max_tokens": sc.max_tokens}
    sent = 0
    while len(kept) < sc.count and sent < budget:
        batch = min(sc.requests_per_round, budget - sent)
        prompts = []
        for j in range(sent, sent + batch):
            rng = random.Random(f"{seed}:self_instruct:{j}")
            ex_seeds = rng.sample(list(seeds), min(sc.seed_examples, len(seeds)))
            ex_gen = rng.sample(generated, min(sc.generated_examples, len(generated)))
            examples = [s.instruction for s in ex_seeds] + [g[1] for g in ex_gen]
            ids = [s.seed_id for s in ex_seeds] + [g[0] for g in ex_gen]
            prompts.append((j, self_instruct_messages(examples, sc.new_per_request), ids))

        async def ask(j: int, messages: list[dict]) -> Completion | TeacherError:
            try:
                return await client.complete(messages, seed=seed + j, **params)
            except TeacherError as err:
                return err
            finally:
                if on_done:
                    on_done()

        replies = await asyncio.gather(*(ask(j, m) for j, m, _ in prompts))
        sent += batch
        for (j, _, ids), reply in zip(prompts, replies):
            common = _base(client, run_id, "self_instruct", SELF_INSTRUCT_TEMPLATE,
                           seed_source=seeds[0].source,
                           gen_params={**params, "seed": seed + j, "request": j, "example_ids": ids})
            if isinstance(reply, TeacherError):
                out.rejected.append(_rejected("", f"teacher_error:{reply.reason}", common))
                continue
            candidates = parse_new_instructions(reply.text)
            if not candidates:
                out.rejected.append(_rejected("", "no_instruction", common, reply))
            for text in candidates:
                reason = instruction_problem(text, sc)
                tokens = rouge_tokens(text)
                if reason is None:
                    score, _ = max_rouge_l(tokens, pool_tokens)
                    if score >= sc.max_rouge_l:
                        reason = f"rouge_l_similar({score:.2f}>={sc.max_rouge_l})"
                if reason is None and len(kept) >= sc.count:
                    reason = "surplus"
                if reason is not None:
                    out.rejected.append(_rejected(text, reason, common, reply))
                    continue
                pool.append(text)
                pool_tokens.append(tokens)
                generated.append((f"gen_{len(generated) + 1}", text))
                kept.append((text, {**common, **_completion_fields(reply)}))
    out.requests = sent
    answers = await asyncio.gather(*(answer_all(client, text, cfg, seed, {k: v for k, v in common.items()
                                                                          if k in _PROVENANCE})
                                     for text, common in kept))
    for rows, bad in answers:
        out.rows += rows
        out.rejected += bad
    out.extra = {"requests": sent, "candidates": len(kept) + sum(1 for r in out.rejected if r["text"]
                                                                  and not r["sample_index"]),
                 "kept_instructions": len(kept),
                 "filtered": dict(Counter(r["drop_reason"].split("(")[0].split(":")[0] for r in out.rejected))}
    return out


# the fields of a generating request's row that its answer row keeps (the answer's own usage
# replaces the request's: the row's usage columns are the answer's)
_PROVENANCE = ("teacher_model", "run_id", "method", "template", "sample_index", "seed_id", "seed_source",
               "parent_seed_id", "topic", "gen_params")


def evol_operation(seed: int, chain: int, rnd: int, weights: dict[str, float]) -> str:
    """The evolution operation of chain ``chain`` in round ``rnd``, drawn by ``weights`` from a
    generator seeded by the three (so ``run --estimate`` rebuilds the same prompts)."""
    rng = random.Random(f"{seed}:evol:{chain}:{rnd}")
    names = [k for k, w in weights.items() if w > 0]
    return rng.choices(names, [weights[k] for k in names])[0]


async def generate_evol(client: TeacherClient, seeds: Sequence[SeedTask], cfg: InstructionsConfig, *,
                        run_id: str | None = None, seed: int = 0,
                        on_done: Callable[[], None] | None = None) -> Generated:
    """Evol-Instruct: ``count`` chains, their roots cycling through the seeds, evolved for
    ``rounds`` rounds; every chain's round runs concurrently. A successful evolution is a kept
    row and the parent of the next round; a failed one is a rejected row and its parent evolves
    again (WizardLM)."""
    ec = cfg.evol_instruct
    out = Generated()
    params = {"temperature": ec.temperature, "top_p": ec.top_p, "max_tokens": ec.max_tokens}
    chains = [seeds[i % len(seeds)] for i in range(ec.count)]
    current: list[tuple[str, str]] = [(s.instruction, s.seed_id) for s in chains]  # (instruction, its id)
    ops: Counter[str] = Counter()
    failed: Counter[str] = Counter()

    async def evolve(i: int, rnd: int) -> tuple[list[dict], list[dict]]:
        root = chains[i]
        parent, parent_id = current[i]
        op = evol_operation(seed, i, rnd, ec.operations)
        ops[op] += 1
        req_seed = seed + i * 100 + rnd
        common = _base(client, run_id, "evol_instruct", f"evol_{op}_v1", seed_id=root.seed_id,
                       seed_source=root.source, parent_seed_id=parent_id, topic=root.category,
                       gen_params={**params, "seed": req_seed, "round": rnd, "operation": op, "chain": i})
        try:
            try:
                c = await client.complete(evol_messages(parent, op), seed=req_seed, **params)
            except TeacherError as err:
                return [], [_rejected(parent, f"teacher_error:{err.reason}", common)]
            out.requests += 1
            evolved = c.text.strip()
            if not evolved:
                return [], [_rejected(parent, "evol_empty", common, c)]
            row, bad, answer = await answer_row(client, evolved, cfg, seed, common)
            out.requests += 1
            if row is None:
                return [], [bad]
            equal = None
            if ec.no_gain_check == "teacher":
                try:
                    j = await client.complete([{"role": "user", "content": EVOL_EQUAL_PROMPT.format(
                        parent=parent, evolved=evolved)}], temperature=0.0, max_tokens=8, seed=seed)
                    out.requests += 1
                    equal = parse_equal(j.text)
                except TeacherError as err:
                    bad = dict(row)
                    bad["drop_reason"] = f"teacher_error:{err.reason}"
                    return [], [bad]
            reason = evol_failure(parent, evolved, answer, ec, equal)  # an unclear verdict: the rules
            if reason is not None:
                row["drop_reason"] = reason
                return [], [row]
            current[i] = (evolved, row["id"])
            # the evolution is judged on answer 0; only one that survives gets the other answers
            more, bad = await answer_all(client, evolved, cfg, seed, common, first=1, seen={row["id"]})
            out.requests += cfg.answers_per_instruction - 1
            return [row, *more], bad
        finally:
            if on_done:
                on_done()

    for rnd in range(1, ec.rounds + 1):
        results = await asyncio.gather(*(evolve(i, rnd) for i in range(len(chains))))
        for rows, bad in results:
            out.rows += rows
            out.rejected += bad
            for r in bad:
                if not r["sample_index"]:  # answer 0 decides the evolution's fate
                    failed[r["drop_reason"].split("(")[0].split(":")[0]] += 1
    out.extra = {"chains": len(chains), "rounds": ec.rounds, "operations": dict(ops),
                 "evolved": sum(1 for r in out.rows if not r["sample_index"]),
                 "eliminated": dict(failed)}
    return out


async def check_completions_endpoint(client: TeacherClient, cfg: MagpieConfig, seed: int
                                     ) -> Completion | TeacherError:
    """Magpie's first request, sent alone before any other of the stage: the endpoint's answer
    tells whether the teacher has a completions endpoint. A 404 (or 405) is
    :class:`MagpieUnavailable`, one line naming the method; the answer (or another failure,
    which is that query's failure) is Magpie's query 0."""
    try:
        return await client.complete_text(magpie_prefix(cfg), temperature=cfg.temperature, top_p=cfg.top_p,
                                          max_tokens=cfg.max_tokens, seed=seed, stop=MAGPIE_STOPS[cfg.template])
    except TeacherError as err:
        if err.reason in ("http_404", "http_405"):
            raise MagpieUnavailable(
                f"instructions.magpie: the teacher at {redact_url(client.base_url)} has no completions endpoint "
                f"(/v1/completions answered {err.reason[5:]}); Magpie needs one: set "
                "instructions.magpie.count: 0 or use a teacher that serves /v1/completions") from None
        return err


async def generate_magpie(client: TeacherClient, cfg: InstructionsConfig, *, run_id: str | None = None,
                          seed: int = 0, first: Completion | TeacherError | None = None,
                          on_done: Callable[[], None] | None = None) -> Generated:
    """Magpie: ``count`` completions of the template's pre-query prefix, each cut at the end of
    the user turn and kept when it has ``min_words`` words and is new; the chat endpoint answers."""
    mc = cfg.magpie
    out = Generated()
    prefix = magpie_prefix(mc)
    params = {"temperature": mc.temperature, "top_p": mc.top_p, "max_tokens": mc.max_tokens}

    async def ask(i: int) -> Completion | TeacherError:
        try:
            if i == 0 and first is not None:
                return first
            return await client.complete_text(prefix, seed=seed + i, stop=MAGPIE_STOPS[mc.template], **params)
        except TeacherError as err:
            return err
        finally:
            if on_done:
                on_done()

    replies = await asyncio.gather(*(ask(i) for i in range(mc.count)))
    out.requests = mc.count
    seen: set[str] = set()
    kept: list[tuple[str, dict]] = []
    for i, reply in enumerate(replies):
        common = _base(client, run_id, "magpie", f"magpie_{mc.template if mc.prefix is None else 'custom'}",
                       gen_params={**params, "seed": seed + i, "prefix": prefix})
        if isinstance(reply, TeacherError):
            out.rejected.append(_rejected("", f"teacher_error:{reply.reason}", common))
            continue
        query = clean_magpie_query(reply.text, mc)
        words = len(query.split())
        norm = " ".join(rouge_tokens(query))
        if not query:
            reason = "magpie_empty_query"
        elif words < mc.min_words:
            reason = f"magpie_short_query({words}<{mc.min_words})"
        elif norm in seen:
            reason = "magpie_duplicate_query"
        else:
            reason = None
        if reason:
            out.rejected.append(_rejected(query, reason, common, reply))
            continue
        seen.add(norm)
        kept.append((query, common))
    answers = await asyncio.gather(*(answer_all(client, q, cfg, seed, common) for q, common in kept))
    for rows, bad in answers:
        out.rows += rows
        out.rejected += bad
    out.requests += len(kept) * cfg.answers_per_instruction
    out.extra = {"queries": mc.count, "kept_queries": len(kept), "prefix": prefix,
                 "filtered": dict(Counter(r["drop_reason"].split("(")[0].split(":")[0] for r in out.rejected))}
    return out


def self_instruct_budget(sc: SelfInstructConfig) -> int:
    """The most generating requests Self-Instruct sends: ``max_requests``, else 4 x what ``count``
    needs at ``new_per_request`` tasks a request (0 when the method is off)."""
    return 0 if not sc.count else (sc.max_requests or 4 * -(-sc.count // sc.new_per_request))


def request_plan(cfg: InstructionsConfig) -> dict[str, dict[str, Any]]:
    """The most requests the stage can send, by purpose, with their ``max_tokens`` and endpoint:
    what a cost estimate needs (the prompts of answers and later rounds depend on the teacher's
    replies, so the counts are upper bounds: a filtered task or query gets no answer)."""
    sc, ec, mc, n = cfg.self_instruct, cfg.evol_instruct, cfg.magpie, cfg.answers_per_instruction
    plan = {
        "self_instruct": {"requests": self_instruct_budget(sc), "max_tokens": sc.max_tokens, "endpoint": "chat"},
        "self_instruct_answers": {"requests": sc.count * n, "max_tokens": cfg.answer_max_tokens, "endpoint": "chat"},
        "evol_instruct": {"requests": ec.count * ec.rounds, "max_tokens": ec.max_tokens, "endpoint": "chat"},
        "evol_instruct_answers": {"requests": ec.count * ec.rounds * n, "max_tokens": cfg.answer_max_tokens,
                                  "endpoint": "chat"},
        "evol_equality": {"requests": ec.count * ec.rounds if ec.no_gain_check == "teacher" else 0,
                          "max_tokens": 8, "endpoint": "chat"},
        "magpie": {"requests": mc.count, "max_tokens": mc.max_tokens, "endpoint": "completions"},
        "magpie_answers": {"requests": mc.count * n, "max_tokens": cfg.answer_max_tokens, "endpoint": "chat"},
    }
    return {k: v for k, v in plan.items() if v["requests"]}


def summarize_instructions(rows: Sequence[dict], parts: dict[str, Generated]) -> dict:
    """What run.json records: per method its counts and filters, and the distinct-n of the kept
    instructions (the user turns, each once however many answers it has) — the diversity
    Self-Instruct and Magpie are meant to bring."""
    prompts = list(dict.fromkeys(r["messages"][0]["content"] for r in rows if r.get("messages")))
    dn = distinct_n(prompts, (1, 2, 3)) if prompts else {}
    return {"methods": {name: {"kept": len(g.rows), "rejected": len(g.rejected), **g.extra}
                        for name, g in parts.items()},
            "kept_by_method": dict(Counter(r["method"] for r in rows)),
            "kept_instructions": len(prompts),
            "instruction_distinct_n": {f"distinct_{k}": round(v, 4) for k, v in dn.items()}}
