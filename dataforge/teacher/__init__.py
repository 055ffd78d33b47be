"""The teacher: an OpenAI-compatible chat client with retries, bounded concurrency and a
persistent request cache."""

from dataforge.teacher.cache import RequestCache, request_key
from dataforge.teacher.client import (
    Completion,
    SecretRedactingFilter,
    TeacherClient,
    TeacherError,
    TeacherStats,
    parse_retry_after,
)

__all__ = [
    "Completion",
    "RequestCache",
    "SecretRedactingFilter",
    "TeacherClient",
    "TeacherError",
    "TeacherStats",
    "parse_retry_after",
    "request_key",
]
