"""Chain-of-thought and program-of-thought solutions for seed questions, k samples each.

Prompts. Orca (Mukherjee et al. 2023) shows that the system message shapes the explanation
a teacher writes and trains the student on a mix of them ("think step by step and justify
your steps", "explain like to a five year old", ...); the mix here (``cot.system_prompts``)
uses prompts written for this project in that spirit. Each sample's prompt is drawn
deterministically from the run seed, the question and the sample index, and its name is
stored in ``system_prompt``. The zero-shot prompts stay in the sample's ``messages`` (the
student learns to follow them, as in Orca); ``fewshot`` adds two worked examples, which a
135M teacher needs to produce the answer format at all, and its scaffolding is not kept.

Checking. The final answer is extracted per answer type (:mod:`dataforge.generate.answers`)
and compared with the seed's gold answer; only verified rationales are kept by default
(rejection sampling on the answer: STaR, Zelikman et al. 2022; Symbolic CoT Distillation, Li
et al. 2023, sample many rationales per question from the teacher). A right answer is not a
right rationale: with ``check_steps`` (on by default) every arithmetic claim is recomputed and
every number traced to the question or an earlier step (:mod:`dataforge.generate.steps`; for a
program, its comments against the values it computes), and a sample with a wrong step is
dropped as ``wrong_step:<the step as written>``. Across a question's
samples ``votes`` counts the samples that reached the same answer and ``agreement`` is
votes / samples (self-consistency, Wang et al. 2023).

Programs (``method: pot`` or ``both``) follow PAL (Gao et al. 2023) and TinyGSM (Liu et al.
2023): the teacher writes ``def solution()``; :mod:`dataforge.generate.pot` runs it in a
sandbox and its return value is the answer.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from dataforge.config import CotConfig
from dataforge.generate import steps
from dataforge.generate.answers import Choice, answer_key, answers_match, extract_answer
from dataforge.generate.pot import SandboxLimits, answer_from_result, extract_program, run_program
from dataforge.generate.seeds import Seed
from dataforge.generate.synthesis import consensus_verdict
from dataforge.records import make_sample
from dataforge.teacher import TeacherClient, TeacherError
from dataforge.teacher.client import answered_at
from dataforge.teacher.logprobs import completion_topk

TEMPLATE = "cot_fewshot_v1"
POT_TEMPLATE = "pot_v1"
POT_PROMPT_NAME = "program_of_thought"

SYSTEM = 'Solve the math word problem. Think step by step, show the calculation, and end with "The answer is N."'

# Two worked examples written for this template: short, one calculation per line, and the
# closing phrase the extractor looks for. Small teachers follow a format far better when shown.
FEW_SHOT = [
    {"role": "user", "content": "Tom has 3 boxes with 4 apples in each box. How many apples does Tom have?"},
    {"role": "assistant", "content": "Each box has 4 apples and there are 3 boxes.\n3 * 4 = 12\nThe answer is 12."},
    {"role": "user", "content": "Sara had 10 pencils. She gave 4 pencils to her friend. How many pencils does Sara have now?"},
    {"role": "assistant", "content": "Sara started with 10 pencils and gave away 4.\n10 - 4 = 6\nThe answer is 6."},
]

# The same idea for the other answer types (written for this project).
FEW_SHOT_OPTION = [
    {"role": "user", "content": "Which of these animals is a mammal?\n"
                                "Answer Choices: (A) shark (B) whale (C) trout (D) frog (E) eagle"},
    {"role": "assistant", "content": "Sharks and trout are fish, a frog is an amphibian and an eagle is a bird. "
                                     "A whale breathes air and feeds its young with milk, so it is a mammal.\n"
                                     "The answer is (B)."},
    {"role": "user", "content": "A pen costs $2. How much do 6 pens cost?\n"
                                "Answer Choices: (A) $8 (B) $10 (C) $12 (D) $14 (E) $16"},
    {"role": "assistant", "content": "Each pen costs $2 and there are 6 pens.\n6 * 2 = 12\nThe answer is (C)."},
]
FEW_SHOT_OPTION_TEXT = [
    {"role": "user", "content": "Where would you keep milk to keep it cold?\nOptions:\n- oven\n- refrigerator\n- cupboard"},
    {"role": "assistant", "content": "An oven heats food and a cupboard stays at room temperature. "
                                     "A refrigerator keeps food cold.\nThe answer is refrigerator."},
    {"role": "user", "content": "What do you use to cut paper?\nOptions:\n- spoon\n- scissors\n- glue"},
    {"role": "assistant", "content": "A spoon is for eating and glue sticks paper together. "
                                     "Scissors have two blades that cut.\nThe answer is scissors."},
]
FEW_SHOT_YESNO = [
    {"role": "user", "content": "Can a penguin fly to the top of a tree?"},
    {"role": "assistant", "content": "Penguins are birds, but their wings are flippers made for swimming. "
                                     "Penguins cannot fly at all.\nThe answer is no."},
    {"role": "user", "content": "Would a glass of water left outside freeze on a day at -10 degrees Celsius?"},
    {"role": "assistant", "content": "Water freezes at 0 degrees Celsius. -10 degrees is colder than 0, "
                                     "so the water would freeze.\nThe answer is yes."},
]
FEW_SHOT_TEXT = [
    {"role": "user", "content": "What is the capital city of France?"},
    {"role": "assistant", "content": "France is a country in Europe, and its government sits in Paris.\n"
                                     "The answer is Paris."},
    {"role": "user", "content": "Which gas do plants take in from the air to make their food?"},
    {"role": "assistant", "content": "Plants make food by photosynthesis, which uses water, light and carbon "
                                     "dioxide from the air.\nThe answer is carbon dioxide."},
]

# Orca-style system messages: what kind of explanation to write (the closing line that
# states the answer is added per answer type by answer_instruction).
SYSTEM_PROMPTS: dict[str, str] = {
    "fewshot": "",  # SYSTEM and the worked examples above
    "step_by_step": "You are a careful problem solver. Work through the problem step by step, "
                    "justify each step, and check your result before you state it.",
    "explain_to_student": "You are a patient teacher. Explain the solution to a student who finds this hard: "
                          "say what the question asks and which facts it gives, then show how each step follows "
                          "from the one before, in plain words.",
    "recall_then_answer": "Before you answer, recall the facts, definitions or formulas this question depends on "
                          "and write them down. Then use them, one step at a time, to reach the answer.",
    "concise": "Solve the problem with a short chain of reasoning: only the steps that are needed, "
               "one per line, each with its calculation or fact.",
}

POT_SYSTEM = ("Write a Python program that solves the problem. Define a function solution() that takes no "
              "arguments and returns the final answer {what}. Give each quantity a variable with a meaningful "
              "name and explain the steps in short comments. Use only the Python standard library, do not "
              "print anything, and reply with the code in one ```python block.")

POT_FEW_SHOT = [
    {"role": "user", "content": FEW_SHOT[0]["content"]},
    {"role": "assistant", "content": "```python\ndef solution():\n    boxes = 3\n    apples_per_box = 4\n"
                                     "    # every box holds the same number of apples\n"
                                     "    total_apples = boxes * apples_per_box\n    return total_apples\n```"},
    {"role": "user", "content": FEW_SHOT[2]["content"]},
    {"role": "assistant", "content": "```python\ndef solution():\n    pencils_at_start = 10\n    pencils_given = 4\n"
                                     "    # giving pencils away leaves fewer\n"
                                     "    pencils_left = pencils_at_start - pencils_given\n    return pencils_left\n```"},
]


def answer_instruction(answer_type: str, options: Sequence[Choice] = ()) -> str:
    """The closing line each prompt asks for, in the form the extractor reads best."""
    if answer_type == "numeric":
        return 'End with "The answer is N." where N is the final number.'
    if answer_type == "yesno":
        return 'End with "The answer is yes." or "The answer is no."'
    if answer_type == "option":
        labels = [o.label for o in options if o.label]
        if labels and all(len(label) == 1 for label in labels):
            return f'End with "The answer is (X)." where X is the letter of the correct option ({", ".join(labels)}).'
        if labels:
            return f'End with "The answer is X." where X is one of: {", ".join(labels)}.'
        return 'End with "The answer is X." where X is the correct option, written exactly as listed.'
    return 'End with "The answer is" followed by the short answer.'


def _few_shot_for(answer_type: str, options: Sequence[Choice]) -> list[dict[str, str]]:
    if answer_type == "option":
        return FEW_SHOT_OPTION if any(o.label for o in options) else FEW_SHOT_OPTION_TEXT
    return {"numeric": FEW_SHOT, "yesno": FEW_SHOT_YESNO}.get(answer_type, FEW_SHOT_TEXT)


def system_message(prompt: str, answer_type: str = "numeric", options: Sequence[Choice] = ()) -> str:
    """The system message of ``prompt`` for a question of ``answer_type``."""
    if prompt not in SYSTEM_PROMPTS:
        raise ValueError(f"unknown system prompt {prompt!r}; known: {', '.join(SYSTEM_PROMPTS)}")
    if prompt == "fewshot":
        if answer_type == "numeric":
            return SYSTEM
        task = {"option": "Answer the multiple-choice question.", "yesno": "Answer the yes-or-no question."}
        return f"{task.get(answer_type, 'Answer the question.')} Think step by step. {answer_instruction(answer_type, options)}"
    return f"{SYSTEM_PROMPTS[prompt]} {answer_instruction(answer_type, options)}"


def cot_messages(question: str, prompt: str = "fewshot", answer_type: str = "numeric",
                 options: Sequence[Choice] = ()) -> list[dict[str, str]]:
    """The request for one chain-of-thought sample."""
    system = {"role": "system", "content": system_message(prompt, answer_type, options)}
    shots = _few_shot_for(answer_type, options) if prompt == "fewshot" else []
    return [system, *shots, {"role": "user", "content": question}]


def pot_messages(question: str, answer_type: str = "numeric", options: Sequence[Choice] = ()) -> list[dict[str, str]]:
    """The request for one program-of-thought sample (worked examples for numeric questions)."""
    if answer_type == "option":
        labelled = any(o.label for o in options)
        what = ('as a string: the label of the correct option, such as "B"' if labelled
                else "as a string: the correct option, written exactly as listed")
    else:
        what = {"numeric": "as a number", "yesno": "as True (yes) or False (no)"}.get(answer_type, "as a short string")
    shots = POT_FEW_SHOT if answer_type == "numeric" else []
    return [{"role": "system", "content": POT_SYSTEM.format(what=what)}, *shots, {"role": "user", "content": question}]


def choose_system_prompt(weights: Mapping[str, float], run_seed: int, question: str, sample_index: int) -> str:
    """A prompt name drawn with probability proportional to its weight, from a hash of the
    run seed, the question and the sample index: the same inputs always get the same prompt
    (so the teacher cache keeps answering a re-run) and the draw does not depend on order."""
    names = sorted(n for n, w in weights.items() if w > 0)
    if not names:
        raise ValueError("no system prompt has a weight above 0")
    digest = hashlib.sha256(f"{run_seed}\x00{question}\x00{sample_index}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    total = sum(weights[n] for n in names)
    acc = 0.0
    for n in names:
        acc += weights[n] / total
        if u < acc:
            return n
    return names[-1]


def add_votes(rows: list[dict], k: int, answer_types: Mapping[str, str] | None = None) -> None:
    """Fill ``votes`` and ``agreement`` for the samples of each question, in place.

    ``k`` is the number of samples drawn per question (failed requests count: they are
    votes for nothing). Answers are grouped by :func:`answer_key` of the question's answer
    type (``answer_types``: seed_id → type; numeric when absent), so ``"12"`` and
    ``"12.0"`` are one answer and ``"B"`` and ``"b"`` are one option."""
    by_seed: dict[str, list[dict]] = {}
    for r in rows:
        by_seed.setdefault(r["seed_id"], []).append(r)
    for sid, group in by_seed.items():
        atype = (answer_types or {}).get(sid, "numeric")
        keys = [answer_key(r["answer"], atype) for r in group]
        counts = Counter(key for key in keys if key is not None)
        for r, key in zip(group, keys):
            v = counts[key] if key is not None else 0
            r["votes"] = v
            r["agreement"] = v / k


def sandbox_limits(cfg: CotConfig) -> SandboxLimits:
    s = cfg.sandbox
    return SandboxLimits(timeout_s=s.timeout_s, cpu_s=s.cpu_s, memory_mb=s.memory_mb,
                         max_output_bytes=s.max_output_bytes, network_namespace=s.network_namespace,
                         run_as_uid=s.run_as_uid, isolation=s.isolation,
                         require_cgroup=s.require_cgroup)


def methods_of(cfg: CotConfig) -> list[str]:
    return ["cot", "pot"] if cfg.method == "both" else [cfg.method]


async def generate_cot(client: TeacherClient, seeds: list[Seed], cfg: CotConfig, *, run_id: str, seed: int,
                       on_done: Callable[[], None] | None = None) -> tuple[list[dict], list[dict]]:
    """k samples per seed question and method. Returns (samples, failures); every sample
    carries its extracted ``answer`` and ``answer_correct``; a program-of-thought sample also
    ``pot_status`` and ``pot_error`` (not columns: :func:`verdict` reads them). The
    keep/drop decision is :func:`verdict`. Programs run ``cfg.sandbox.workers`` at a time,
    while other requests are still with the teacher."""
    params = {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens}
    limits = sandbox_limits(cfg)
    sandbox_slots = asyncio.Semaphore(cfg.sandbox.workers)

    async def one(s: Seed, k: int, method: str) -> tuple[dict | None, dict | None]:
        if method == "pot":
            prompt, template = POT_PROMPT_NAME, POT_TEMPLATE
            messages = pot_messages(s.question, s.answer_type, s.options)
        else:
            prompt = choose_system_prompt(cfg.system_prompts, seed, s.question, k)
            template = TEMPLATE if prompt == "fewshot" else f"cot_{prompt}_v1"
            messages = cot_messages(s.question, prompt, s.answer_type, s.options)
        sample_seed = seed + k
        common = dict(teacher_model=client.cfg.model, template=template, seed_id=s.seed_id, seed_source=s.source,
                      parent_seed_id=s.parent_seed_id,
                      sample_index=k, gen_params={**params, "seed": sample_seed}, run_id=run_id, question=s.question,
                      gold_answer=s.gold_answer, system_prompt=prompt, method=method)
        try:
            c = await client.complete(messages, seed=sample_seed, sample_index=k, **params)
        except TeacherError as err:
            row = make_sample("cot", "", None, **common)
            row["drop_reason"] = f"teacher_error:{err.reason}"
            return None, row
        finally:
            if on_done:
                on_done()
        reply = c.text.strip()
        program: str | None = None
        pot_status = pot_error = None
        if method == "pot":
            program = extract_program(reply)
            async with sandbox_slots:
                result = await asyncio.to_thread(run_program, program, limits, capture_locals=cfg.check_steps)
            answer = answer_from_result(result, s.answer_type, s.options)
            pot_status, pot_error = result.status, result.reason
            rationale = program if program is not None else reply
            shown = f"```python\n{rationale.rstrip()}\n```" if program is not None else reply
        else:
            rationale = shown = reply
            answer = extract_answer(reply, s.answer_type, s.options)
        report = None
        if cfg.check_steps and method == "cot":
            report = steps.check_steps(rationale, s.question)
        elif cfg.check_steps and program is not None:
            report = steps.check_program_steps(program, result.local_values, s.question)
        chat = [{"role": "user", "content": s.question}, {"role": "assistant", "content": shown}]
        if method == "cot" and prompt != "fewshot":
            chat.insert(0, messages[0])  # Orca: the student is trained with the system message
        text = f"Question: {s.question}\nAnswer: {rationale}"
        row = make_sample("cot", text, chat, **common, rationale=rationale, answer=answer, program=program,
                          answer_correct=(answers_match(answer, s.gold_answer, answer_type=s.answer_type)
                                          if s.gold_answer is not None else None),
                          request_hash=c.request_hash, finish_reason=c.finish_reason, created_at=answered_at(c),
                          prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens, cost_usd=c.cost_usd,
                          teacher_topk=completion_topk(client.cfg, c),
                          **(step_columns(report) if report is not None else {}))
        if method == "pot":
            row["pot_status"], row["pot_error"] = pot_status, pot_error
        return row, None

    methods = methods_of(cfg)
    results = await asyncio.gather(*(one(s, k, m) for s in seeds for m in methods
                                     for k in range(cfg.samples_per_question)))
    rows = [r for r, _ in results if r]
    add_votes(rows, cfg.samples_per_question * len(methods), {s.seed_id: s.answer_type for s in seeds})
    return rows, [f for _, f in results if f]


#: keys of a generated row that are not columns (read by :func:`verdict`, then dropped)
TRANSIENT_KEYS = ("pot_status", "pot_error")


def step_columns(report: "steps.StepReport") -> dict:
    """The record columns of a step check."""
    return {"steps_checked": report.steps_checked, "step_errors": report.step_errors,
            "first_step_error": report.first_step_error}


def wrong_step_reason(row: dict) -> str | None:
    """``wrong_step:<the first wrong step as written>`` when step verification found an error;
    for a prose rationale with a numeric answer, ``no_calculation`` or
    ``unsupported_answer:<answer>`` when it does not show where its answer comes from
    (:func:`dataforge.generate.steps.answer_support`), ``unsupported_quantity:<N noun>`` when
    it misstates a count of the question (:func:`dataforge.generate.steps.unsupported_quantity`)."""
    if row.get("step_errors"):
        excerpt = " ".join(str(row.get("first_step_error") or "").split())
        return f"wrong_step:{excerpt[:80]}"
    if row.get("method") == "cot" and row.get("steps_checked") is not None:
        why = steps.answer_support(row.get("rationale") or "", row.get("answer"), row.get("question"),
                                   row.get("steps_checked"))
        if why is None and (qty := steps.unsupported_quantity(row.get("rationale") or "", row.get("question"))):
            why = f"unsupported_quantity:{qty}"
        return why
    return None


def verdict(row: dict, keep: str, min_agreement: float | None = None, check_steps: bool = False) -> str | None:
    """None to keep the sample, else the drop reason. ``keep: verified`` keeps only samples
    whose answer matches the gold answer (questions without gold keep every sample whose
    program, if any, ran); ``keep: all`` keeps everything. A sample of a *synthesized*
    question (``parent_seed_id`` set, no gold) is kept only when its answer's share of the
    votes is at least ``min_agreement`` (dataforge.generate.synthesis), whatever ``keep``.
    With ``check_steps``, a sample that would be kept for its answer but has a wrong step
    (``step_errors`` > 0: dataforge.generate.steps) is dropped as ``wrong_step:<excerpt>``, and
    a prose one whose numeric answer its steps do not support as ``no_calculation`` or
    ``unsupported_answer:<answer>`` (:func:`wrong_step_reason`)."""
    steps = wrong_step_reason(row) if check_steps else None
    if row.get("parent_seed_id") and row.get("gold_answer") is None and min_agreement is not None:
        status = row.get("pot_status")
        if row.get("method") == "pot" and status is not None and status != "ok":
            return f"program_failed:{status}"
        return consensus_verdict(row, min_agreement) or steps
    if keep == "all":
        return None
    status = row.get("pot_status")
    if row.get("method") == "pot" and status is not None and status != "ok":
        return f"program_failed:{status}"
    if row.get("gold_answer") is None:
        return steps
    if row.get("answer") is None:
        return "no_final_answer" if row.get("finish_reason") != "length" else "truncated_no_final_answer"
    if not row.get("answer_correct"):
        return "answer_mismatch"
    return steps
