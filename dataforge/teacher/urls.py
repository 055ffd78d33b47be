"""URLs as they may be stored or shown: without the parts where credentials hide.

An endpoint URL can carry a secret in its user info (``https://user:pass@host/v1``) or its query
string (``?api_key=...``). :func:`redact_url` is the one form of a URL that dataforge writes
anywhere (``run.json``, an export's card, the request cache, batch and service state files, logs,
Prefect artifacts): scheme, host, port and path, nothing else. It is also stable under a change of
credentials, so it serves as the endpoint's identity (a rotated key re-asks nothing).
:func:`url_secrets` lists the secret parts, for the log redactor.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

# shorter query values are not worth masking in every log line (`?v=1`); a password always is
MIN_SECRET_LEN = 4


def redact_url(url: str) -> str:
    """``url`` with scheme, host, port and path only: user info, query string and fragment
    dropped. A string that is not a URL with a host comes back with everything after the first
    ``?`` or ``#`` dropped, and anything up to an ``@`` in it dropped."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:  # a malformed port or IPv6 literal
        parts, host, port = None, None, None
    if parts is None or not host:
        rest = re.split(r"[?#]", url, maxsplit=1)[0]
        return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)?[^/@]*@", r"\1", rest)
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def url_secrets(url: str) -> list[str]:
    """The parts of ``url`` that may be credentials: its password (and user name when there is
    no password: a token given as ``https://token@host``) and its query values, raw and
    percent-decoded; values shorter than :data:`MIN_SECRET_LEN` are left out."""
    try:
        parts = urlsplit(url or "")
    except ValueError:
        return []
    found: list[str] = []
    netloc = parts.netloc
    if "@" in netloc:
        userinfo = netloc.rsplit("@", 1)[0]
        user, colon, password = userinfo.partition(":")
        found += [password, unquote(password)] if colon else [user, unquote(user)]
    for value in [v for _, v in parse_qsl(parts.query, keep_blank_values=True)]:
        found.append(value)
    for raw in parts.query.split("&"):
        found.append(raw.partition("=")[2])
    return sorted({s for s in found if len(s) >= MIN_SECRET_LEN}, key=len, reverse=True)
