"""The teacher: an OpenAI-compatible chat client with rate limits, retries, bounded
concurrency, structured output, token and cost accounting and a persistent request cache."""

from dataforge.teacher.cache import CacheEntry, RequestCache, request_key
from dataforge.teacher.client import (
    Completion,
    SecretRedactingFilter,
    TeacherClient,
    TeacherError,
    TeacherStats,
    parse_retry_after,
    parse_structured,
)
from dataforge.teacher.ratelimit import RateLimiter, TokenBucket, estimate_tokens

__all__ = [
    "CacheEntry",
    "Completion",
    "RateLimiter",
    "RequestCache",
    "SecretRedactingFilter",
    "TeacherClient",
    "TeacherError",
    "TeacherStats",
    "TokenBucket",
    "estimate_tokens",
    "parse_retry_after",
    "parse_structured",
    "request_key",
]
