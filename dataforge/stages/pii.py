"""``pii``: redact personal data and secrets — e-mail addresses, phone numbers, IP addresses,
payment card numbers, IBANs and secret tokens — in every text-bearing column of a row.

Each finding is replaced by a typed placeholder and counted per type in an ``int32`` column on
every row (``action: redact``, the default); ``action: drop`` rejects the rows that hold any
(their text redacted too, so PII never leaves the stage) with ``drop_reason`` ``pii:<types>``.
The stage lives entirely in this module and is declared to :mod:`dataforge.stages.registry`;
its page is docs/stages/pii.md.

======== ================== ============== ====================================================
type     placeholder        count column   what is found
======== ================== ============== ====================================================
email    ``<EMAIL>``        ``pii_email``  ``local@domain.tld``
phone    ``<PHONE>``        ``pii_phone``  international and national phone numbers
ip       ``<IP_ADDRESS>``   ``pii_ip``     IPv4 and IPv6 (full, compressed, mapped, with zone)
card     ``<CARD_NUMBER>``  ``pii_card``   card numbers of a known brand that pass Luhn
iban     ``<IBAN>``         ``pii_iban``   IBANs of their country's length that pass mod-97
secret   ``<SECRET>``       ``pii_secret`` API-key shapes, JWTs, private-key blocks
======== ================== ============== ====================================================

The rules: what is taken, and what is deliberately left alone
-------------------------------------------------------------

*E-mail.* ``local@label.label.tld``: an ASCII local part (letters, digits, ``._%+-=``: plus tags,
dots, SRS ``=``), one to eight domain labels (``xn--`` labels included), an alphabetic TLD of 2-24
letters. Left alone: a TLD that is a file extension (``icon@2x.png``, ``logo@3x.svg``), a host
without TLD (``root@localhost``), ``@mentions``, decorators, ``pkg@1.2.3``. *Limits:* non-ASCII
local parts and obfuscated addresses (``john at example dot com``) are missed.

*Phone.* Every form needs the digits grouped the way phone numbers are written; a bare digit run
counts only after a phone cue. The forms:

- international: ``+``, a country code and groups separated by one space, dot or dash, with
  ``(0)`` or an ``(area)`` allowed (``+44 20 7946 0958``, ``+1-202-555-0173``, ``+33 (0)1 23 45
  67 89``), or ``+`` and 8-15 digits in one run (``+442079460958``); ``(+44) 20 7946 0958``;
  ``00`` + country code + groups (``0044 20 7946 0958``). 8-15 digits; with dots as separators
  at least two of them (``+12.345678`` is a signed decimal);
- North American: ``(555) 123-4567``, ``555-123-4567``, ``555.123.4567``, ``555 123 4567``,
  ``555 123-4567``, ``1-800-555-0199`` (area code 2xx-9xx; the second separator is the first's
  or a dash);
- national with a trunk ``0``: ``(020) 7946 0958``, ``020 7946 0958``, ``06 12 34 56 78``,
  ``06-12345678``, ``030/1234567``, ``089 / 12 34 56``: 9-12 digits in at least two groups (10
  when the groups are dotted: ``016.146.301`` is a grant number);
- after a cue word (``tel``, ``telephone``, ``phone``, ``ph``, ``mobile``, ``cell``, ``fax``,
  ``call``, ``whatsapp``, ``hotline``, ``sms``; then optionally ``no.``/``number``/``#``/``:``
  /``is``/``at``): 7-15 digits, grouped or in one run (``call 555-0199``, ``Tel: 07700900123``).

A candidate is refused when a word character, ``+``, ``.``, ``-``, ``/`` or a digit and a
separator comes right before it, or a word character, ``(`` or a separator and a digit right
after it (it is part of a longer number: tables, ISBNs, grouped IDs, ``<<a*b=c>>``); when it is a
date (``2024-03-15``, ``15.03.2024 10:30``) or a year range (``1998-2004``); when it continues
an IBAN-shaped code (``NL17 DVZE 0526 9142 73``). So versions, dates, times, ISBNs
(``978-3-16-148410-0``, ``0-306-40615-2``), arithmetic, decimals and ungrouped order, zip and
account numbers stay. *Limits:* a 3-3-4 or 0-prefixed grouped number that is not a phone
(``order 123-456-7890``, ``05 10 15 20 25``) is taken; a phone directly followed by a space and
another number (``020 7946 0958 12``) is left; a number without cue in a form not listed
(``555-0199``, ``5551234567``, ``1-800-FLOWERS``) is missed; only ASCII digits and separators
(a no-break space between groups is not one).

*IP.* IPv4: four octets 0-255 without leading zeros, not inside a longer dotted number or a
word (``v1.2.3.4``, ``10.0.19041.1`` and ``1.3.6.1.4.1`` stay). A four-part number right after a
version word (``version``, ``ver``, ``v``, ``release``, ``build``, ``rev``, ``firmware``,
``update``, ``driver``, ``patch``) is a version; so is one shaped like a version — first part
below 32 and every part below 100 (``2.13.5.17``, section ``3.2.1.4``) — unless an IP cue comes
within 40 characters before it (``ip``, ``address``, ``host``, ``server``, ``dns``, ``gateway``,
``ping``, ``proxy``, ``inet``, ``client``, ``X-Forwarded-For``, ...; ``://``, ``@`` or ``[``
right before) or a ``:port`` or ``/prefix`` follows. IPv6: a colon-hex string that
:mod:`ipaddress` accepts, with at least two non-empty groups one of which holds a digit
(``a::C``, ``dead::beef``, ``std::``, ``Foo::Bar`` stay) and not eight two-character groups
without ``::`` (a hex dump). With ``keep_reserved_ips`` (default) loopback, unspecified,
multicast and 240/4 addresses stay (``127.0.0.1``, ``0.0.0.0``, ``::1``, ``224.1.1.1``,
``255.255.255.0``): they name no host. *Limits:* an address shaped like a version without a cue
(``10.0.0.1``, ``8.8.8.8`` alone) is left — about 1 in 110 random public addresses, and the
private ``10.0.x.y`` ones; a four-part version with a part of 100-255 or a first part of 32 or
more and no version word before it is taken; a version near an IP cue word is taken.

*Card.* 13-19 digits in one run, or 4-4-4-4(-3) groups with one separator throughout (space,
dash or dot), or 4-6-5 / 4-6-4 (Amex, Diners), with a known brand's prefix and length (Visa,
Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro, Mir) and a valid Luhn digit. A run
right after an identifier word (``order``, ``invoice``, ``tracking``, ``ref``, ``serial``,
``isbn``, ``ean``, ``id``, ``account``, ...) is an identifier; a bare 13-digit run needs a card
word before it (``card``, ``visa``, ``credit``, ...): without one it is an EAN-13 barcode far
more often than an old 13-digit Visa. *Limit:* one random digit string in ten passes Luhn, so an
un-introduced 15-19-digit number with a brand prefix (``4…``, ``51…``) is taken one time in ten.

*IBAN.* Two capital letters of a country in the SWIFT registry, two check digits and the BBAN,
contiguous or in groups separated by single spaces, of exactly that country's length, with the
ISO 7064 mod-97 remainder 1. *Limit:* lower-case IBANs and other separators are missed.

*Secret.* ``sk-`` / ``sk-proj-`` / ``sk-ant-api03-`` / ``sk-svcacct-`` keys (20+ characters,
holding a letter and a digit: ``sk-learn`` stays), Stripe ``sk_live_`` / ``rk_test_`` / ...,
AWS key ids (``AKIA``/``ASIA``/... + 16), GitHub (``ghp_``/``gho_``/``ghs_``/``ghu_``/``ghr_``
+ 36, ``github_pat_``), Slack ``xox[abposr]-``, Google ``AIza`` + 35, GitLab ``glpat-``, Hugging
Face ``hf_``, JWTs (``eyJ….eyJ….…``), PEM private-key blocks, the value of an
``aws_secret_access_key = …`` assignment. *Limit:* generic passwords and high-entropy strings
without a known prefix are not searched (git SHAs, UUIDs and hashes stay).

Where findings overlap, one type wins in this order: secret, e-mail, IBAN, card, IP, phone.

The fast path
-------------

:func:`redact_text` is the reference: one string in, the redacted string and the counts out.
The stage (:func:`redact_table`) works on Arrow columns: one RE2 pass
(``pyarrow.compute.match_substring_regex``) with every type's :data:`PREFILTERS` pattern — each
a *necessary* condition of that type's rules — finds the rows that can hold anything (most hold
nothing); one pass per type over those rows says which types to look for in each; the Python
rules and checksums run there only, and the changed strings go back with
``pyarrow.compute.replace_with_mask``. ``tests/test_pii.py`` checks that both paths agree and
that every finding matches its prefilter.
"""

from __future__ import annotations

import ipaddress
import re
import string
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from dataforge.records import with_drop
from dataforge.stages.registry import CURATION, CliOption, Stage, StageConfig, register

STAGE_NAME = "pii"

PII_TYPES: tuple[str, ...] = ("email", "phone", "ip", "card", "iban", "secret")
PiiType = Literal["email", "phone", "ip", "card", "iban", "secret"]

PLACEHOLDERS: dict[str, str] = {
    "email": "<EMAIL>", "phone": "<PHONE>", "ip": "<IP_ADDRESS>",
    "card": "<CARD_NUMBER>", "iban": "<IBAN>", "secret": "<SECRET>",
}
COUNT_COLUMNS: dict[str, str] = {t: f"pii_{t}" for t in PII_TYPES}

# which finding wins where two overlap (lower wins)
PRIORITY: dict[str, int] = {"secret": 0, "email": 1, "iban": 2, "card": 3, "ip": 4, "phone": 5}

DEFAULT_TEXT_COLUMNS = ("text", "messages", "question", "rationale", "answer", "program", "gold_answer",
                        "first_step_error", "text_original")
"""The text-bearing columns of :data:`~dataforge.records.SAMPLE_SCHEMA` (``text_original``: the
``text`` column of a standalone input read with ``--text-column``). Absent ones are skipped."""


# ---------------------------------------------------------------------------------------------
# checksums
# ---------------------------------------------------------------------------------------------

def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check of a digit string."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def card_brand(digits: str) -> str | None:
    """The brand whose prefix (IIN range) and length ``digits`` has, else None."""
    n = len(digits)
    if n < 12 or not digits.isdigit():
        return None
    p2, p3, p4, p6 = int(digits[:2]), int(digits[:3]), int(digits[:4]), int(digits[:6])
    if digits[0] == "4":
        return "visa" if n in (13, 16, 19) else None
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return "mastercard" if n == 16 else None
    if p2 in (34, 37):
        return "amex" if n == 15 else None
    if 2200 <= p4 <= 2204:
        return "mir" if 16 <= n <= 19 else None
    if p4 == 6011 or 644 <= p3 <= 649 or p2 == 65 or 622126 <= p6 <= 622925:
        return "discover" if 16 <= n <= 19 else None
    if 3528 <= p4 <= 3589:
        return "jcb" if 16 <= n <= 19 else None
    if 300 <= p3 <= 305 or p2 in (36, 38, 39) or p4 == 3095:
        return "diners" if 14 <= n <= 19 else None
    if p2 == 62:
        return "unionpay" if 16 <= n <= 19 else None
    if p4 in (5018, 5020, 5038, 5893, 6304, 6759, 6761, 6762, 6763):
        return "maestro" if 16 <= n <= 19 else None
    return None


# IBAN length per country (SWIFT IBAN registry)
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28,
    "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}


def iban_valid(iban: str) -> bool:
    """Whether a compact upper-case IBAN has its country's length and passes ISO 7064 mod-97."""
    if (len(iban) != IBAN_LENGTHS.get(iban[:2], -1) or not iban[2:4].isdigit() or not iban.isascii()
            or not iban.isalnum() or iban != iban.upper()):
        return False
    rearranged = iban[4:] + iban[:4]
    remainder = 0
    for ch in rearranged:  # letters are 10..35; fold digit by digit to stay small
        for d in (str(ord(ch) - 55) if ch.isalpha() else ch):
            remainder = (remainder * 10 + ord(d) - 48) % 97
    return remainder == 1


# ---------------------------------------------------------------------------------------------
# detectors: each ``_find_<type>(text)`` yields ``(start, end)`` of the findings in ``text``
#
# Every pattern begins with one literal character or character class and checks what comes
# before it with a lookbehind placed *after* that first character (``[0-9](?<![\w.][0-9])``
# rather than ``(?<![\w.])[0-9]``): the same condition, but Python's ``re`` can then skip ahead
# to the next possible first character instead of trying the whole pattern at every position.
# ---------------------------------------------------------------------------------------------

def _first(first: str, *not_before: str) -> str:
    """``first`` (one character class), not preceded by any of ``not_before`` (fixed-width
    patterns): the lookbehinds are written after it, see above."""
    return first + "".join(f"(?<!{nb}{first})" for nb in not_before)


_EMAIL = re.compile(_first(r"[A-Za-z0-9_]", r"[\w.%+\-=]") + r"""
    [A-Za-z0-9._%+\-=]{0,63}
    @
    (?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.){1,8}
    ([A-Za-z]{2,24})
    (?![\w\-]|\.[A-Za-z0-9])
""", re.VERBOSE)
_FILE_EXTENSIONS = frozenset(
    "png jpg jpeg gif svg webp bmp ico tif tiff avif heic css js mjs cjs ts tsx jsx json html htm xml "
    "txt pdf zip gz tgz mp3 mp4 wav webm woff woff2 ttf otf eot map vue scss less yml yaml toml lock".split())


def _find_email(text: str) -> Iterable[tuple[int, int]]:
    if "@" not in text:
        return
    for m in _EMAIL.finditer(text):
        if m.group(1).lower() not in _FILE_EXTENSIONS:
            yield m.span()


# phone: a number starts where no word character, "+", ".", "-", "/" or digit-and-separator comes
# before it, and ends where no word character, "(" or separator-and-digit follows
_NB1, _NB2 = r"[\w+.\-/]", r"[0-9][ .\-/]"
_PE = r"(?![\w(]|[.\-/ :][0-9])"
_GROUPS = r"(?:(?:[ .\-]?\([0-9]{1,4}\)[ .\-]?|[ .\-])[0-9]{1,10}){1,6}"
_NANP_REST = r"(?:\([2-9][0-9]{2}\)[ ]?[0-9]{3}[ .\-][0-9]{4}|[2-9][0-9]{2}(?P<s>[.\- ])[0-9]{3}(?:(?P=s)|-)[0-9]{4})"
_PHONE_FORMS: tuple[tuple[re.Pattern, int, int], ...] = (
    # international: + country code and groups, or + and a run of 8-15 digits
    (re.compile(_first(r"\+", r"[\w+)]") + r"[1-9](?:[0-9]{0,4}" + _GROUPS + "|[0-9]{7,14})" + _PE), 8, 15),
    # international with the country code in parentheses: (+44) 20 7946 0958
    (re.compile(_first(r"\(", _NB1, _NB2) + r"\+[1-9][0-9]{0,3}\)" + _GROUPS + _PE), 8, 15),
    # international with the 00 prefix
    (re.compile(_first("0", _NB1, _NB2) + r"0[1-9][0-9]{0,4}" + _GROUPS + _PE), 10, 17),
    # North American: (555) 123-4567, 555-123-4567, 555.123.4567, 555 123 4567, 1-800-555-0199
    (re.compile(_first(r"\(", _NB1, _NB2) + r"[2-9][0-9]{2}\)[ ]?[0-9]{3}[ .\-][0-9]{4}" + _PE), 10, 10),
    (re.compile(_first("[2-9]", _NB1, _NB2) + r"[0-9]{2}(?P<s>[.\- ])[0-9]{3}(?:(?P=s)|-)[0-9]{4}" + _PE), 10, 10),
    (re.compile(_first("1", _NB1, _NB2) + r"[ .\-]?" + _NANP_REST + _PE), 11, 11),
    # national with a trunk 0: (020) 7946 0958, 020 7946 0958, 06 12 34 56 78, 030/1234567
    (re.compile(_first(r"\(", _NB1, _NB2) + r"0[1-9][0-9]{0,3}\)[ ]?[0-9]{2,8}(?:[ .\-][0-9]{2,4}){0,4}" + _PE),
     9, 12),
    (re.compile(_first("0", _NB1, _NB2) + r"[1-9][0-9]{0,3}(?:[ .\-/]|[ ]/[ ])"
                r"[0-9]{2,8}(?:[ .\-][0-9]{2,4}){0,4}" + _PE), 9, 12),
)
# after a cue: any 7-15 digits, grouped or not; found as a number, then the cue is looked for before it
_CUE_NUMBER = re.compile(_first("[0-9]", r"[\w.\-/]", _NB2) + r"(?:[ .\-]?\(?[0-9]\)?){6,16}(?![\w]|[.\-/:][0-9])")
_PHONE_CUE = re.compile(
    r"(?i:\b(?:tel(?:ephone)?|phone(?:[ \t]+number)?|ph|mob(?:ile)?|cell(?:phone)?|fax|whatsapp|hotline|sms"
    r"|call(?:[ \t]+(?:me|us|him|her|them))?)\b)"
    r"\.?(?:[ \t]*(?i:no|nr|num|number|\#)\.?)?(?:[ \t]*(?:(?i:is|at|on)\b|[:\-#]))?[ \t]*(?P<lead>[+(]?)$")
_DATE_LIKE = re.compile(r"""^\+?(?:
      (?:19|20)[0-9]{2}[./\-](?:0?[1-9]|1[0-2])[./\-](?:0?[1-9]|[12][0-9]|3[01])
    | (?:0?[1-9]|[12][0-9]|3[01])[./\-](?:0?[1-9]|1[0-2])[./\-](?:19|20)[0-9]{2}
    | (?:0?[1-9]|1[0-2])[./\-](?:0?[1-9]|[12][0-9]|3[01])[./\-](?:19|20)[0-9]{2}
    | (?:19|20)[0-9]{2}[ ]?[\-/][ ]?(?:19|20)[0-9]{2}
    )(?:$|[ T])""", re.VERBOSE)
# the end of an IBAN-shaped code (``NL17 DVZE``) before a number: the number is the rest of that code
_CODE_LEAD = re.compile(r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){0,7} ?$")


def _continues_code(text: str, start: int) -> bool:
    return start > 0 and text[start - 1] in " 0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ" and \
        _CODE_LEAD.search(text, max(0, start - 40), start) is not None


def _phone_ok(s: str, lo: int, hi: int, grouped: bool) -> bool:
    digits = sum(ch.isdigit() for ch in s) - (1 if "(0)" in s else 0)
    if not lo <= digits <= hi or _DATE_LIKE.match(s):
        return False
    if s[0] == "0" and digits < 10 and not s.strip("0123456789."):
        return False  # 016.146.301: nine digits in dotted groups read as a reference number
    if grouped and s.startswith(("+", "00")):
        seps = [ch for ch in s.lstrip("+") if not ch.isdigit()]
        if "." in seps and seps.count(".") < 2:
            return False  # +12.345678: a signed decimal
    return True


def _find_phone(text: str) -> Iterable[tuple[int, int]]:
    for pattern, lo, hi in _PHONE_FORMS:
        for m in pattern.finditer(text):
            if _phone_ok(m.group(), lo, hi, True) and not _continues_code(text, m.start()):
                yield m.span()
    for m in _CUE_NUMBER.finditer(text):
        s, e = m.span()
        cue = _PHONE_CUE.search(text, max(0, s - 48), s)
        if cue is not None and _phone_ok(m.group(), 7, 15, False):
            yield s - len(cue.group("lead")), e


_OCTETS = re.compile(_first("[0-9]", r"[\w.]") + r"[0-9]{0,2}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}"
                     r"(?![\w]|\.[0-9]|-[A-Za-z])")
_IPV6 = re.compile(_first("[0-9A-Fa-f:]", r"[\w:.%]") + r"""
    (?=[0-9A-Fa-f]{0,3}:[0-9A-Fa-f]{0,4}:|:)
    [0-9A-Fa-f:]{1,38}
    (?:(?<=:)(?:[0-9]{1,3}\.){3}[0-9]{1,3})?
    (?:%[0-9A-Za-z]{1,15})?
    (?![\w:]|\.[0-9])
""", re.VERBOSE)
_VERSION_CUE = re.compile(r"(?i:\b(?:version|ver|v|release|rel|build|revision|rev|firmware|update|driver|patch)"
                          r"\.?[ \t]*[:#]?[ \t]*)$")
_IP_CUE = re.compile(r"(?i:\b(?:ip|ipv4|ips|address(?:es)?|addr|host(?:name)?s?|servers?|ping|dns|gateway|router|"
                     r"proxy|inet|nameserver|subnet|netmask|bind|listen(?:ing)?|connect(?:ed|ing|ion|s)?|clients?|"
                     r"peers?|remote|src|dst|origin|forwarded(?:-for)?|real-ip)\b)|(?:://|@|\[)$")
_IP_AFTER = re.compile(r":[0-9]{1,5}\b|/[0-9]{1,2}\b")


def _ip_reserved(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return (addr.is_loopback or addr.is_unspecified or addr.is_multicast
            or (addr.version == 4 and addr.is_reserved))


def _version_shaped(octets: list[int]) -> bool:
    """Small numbers everywhere: how versions and section numbers look (``2.13.5.17``); host
    addresses rarely do (a random public address: about 1 in 110)."""
    return octets[0] < 32 and max(octets) < 100


def _find_ip(text: str, keep_reserved: bool = True) -> Iterable[tuple[int, int]]:
    for m in _OCTETS.finditer(text):
        parts = m.group().split(".")
        if any(len(p) > 1 and p[0] == "0" or int(p) > 255 for p in parts):
            continue  # not an address: an octet above 255 or with a leading zero
        s, e = m.span()
        before = text[max(0, s - 40):s]
        if _VERSION_CUE.search(before):
            continue
        if _version_shaped([int(p) for p in parts]) and not (_IP_CUE.search(before) or _IP_AFTER.match(text, e)):
            continue
        if keep_reserved and _ip_reserved(ipaddress.IPv4Address(m.group())):
            continue
        yield s, e
    if text.count(":") < 2:
        return
    for m in _IPV6.finditer(text):
        cand = m.group()
        addr_text = cand.split("%", 1)[0]
        try:
            addr = ipaddress.IPv6Address(addr_text)
        except ValueError:
            continue
        hexpart = addr_text.rsplit(":", 1)[0] if "." in addr_text else addr_text
        groups = [g for g in hexpart.split(":") if g]
        if "." in addr_text:
            groups.append("0")  # the embedded IPv4 holds digits
        if len(groups) < 2 or not any(ch.isdigit() for g in groups for ch in g):
            continue  # a::C, dead::beef, CC::
        if "::" not in addr_text and all(len(g) == 2 for g in groups):
            continue  # de:ad:be:ef:00:11:22:33, a hex dump
        if keep_reserved and _ip_reserved(addr):
            continue
        yield m.span()


_CARD = re.compile(_first("[0-9]", r"[\w\-.]", r"[0-9][ \-.]") + r"""
    (?:
        [0-9]{3}(?P<a>[ \-.])[0-9]{4}(?P=a)[0-9]{4}(?P=a)[0-9]{4}(?:(?P=a)[0-9]{3})?(?![0-9]|(?P=a)[0-9]{3})
      | [0-9]{3}(?P<b>[ \-])[0-9]{6}(?P=b)[0-9]{4,5}(?![0-9]|(?P=b)[0-9]{3})
      | (?P<run>[0-9]{12,18})(?![0-9])
    )
    (?![A-Za-z_]|[.,\-][0-9])
""", re.VERBOSE)
_ID_CUE = re.compile(r"(?i:\b(?:order|invoice|tracking|ref|reference|serial|transaction|ticket|case|isbn|issn|"
                     r"ean|upc|gtin|doi|pmid|patent|id|account|acct|phone|tel|fax)\b"
                     r"(?:[ \t]*(?:number|no\.?|nr\.?|id|\#))?)[\s.:#=\-]{0,4}$")


_CARD_CUE = re.compile(r"(?i:\b(?:card|visa|credit|debit|cc|cc-?num|pan|kreditkarte|carte|tarjeta)\b)")


def _find_card(text: str) -> Iterable[tuple[int, int]]:
    for m in _CARD.finditer(text):
        s, e = m.span()
        digits = re.sub(r"[^0-9]", "", m.group())
        if m.group("run") and _ID_CUE.search(text, max(0, s - 30), s):
            continue  # order #4111111111111111: an identifier
        if len(digits) == 13 and not _CARD_CUE.search(text, max(0, s - 30), s):
            continue  # a bare 13-digit run: an EAN-13 barcode far more often than an old Visa number
        if card_brand(digits) and luhn_valid(digits) and not _continues_code(text, s):
            yield s, e


# every start, so a long greedy run never hides the IBAN after it (the match itself is one letter)
_IBAN = re.compile(_first("[A-Z]", "[A-Za-z0-9]") + r"(?=([A-Z][0-9]{2}(?:[ ]?[A-Z0-9]){11,30}))")


def _find_iban(text: str) -> Iterable[tuple[int, int]]:
    last_end = -1
    for m in _IBAN.finditer(text):
        s = m.start()
        if s < last_end:
            continue
        length = IBAN_LENGTHS.get(text[s:s + 2])
        if length is None:
            continue
        cand = text[s] + m.group(1)
        compact, end = [], s
        for i, ch in enumerate(cand):
            if ch != " ":
                compact.append(ch)
                if len(compact) == length:
                    end = s + i + 1
                    break
        if len(compact) < length or (end < len(text) and text[end].isalnum()):
            continue  # too short, or longer than its country's IBAN
        if iban_valid("".join(compact)):
            last_end = end
            yield s, end


_SECRET = re.compile(r"""
    (?P<tok>
        sk-(?:proj-|ant-(?:api|admin)[0-9]{2}-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,300}
      | [srp]k_(?:live|test)_[A-Za-z0-9]{16,200}
      | A(?:KIA|SIA|GPA|IDA|ROA|IPA|NPA|NVA|BIA|CCA)[A-Z0-9]{16}
      | gh[pousr]_[A-Za-z0-9]{36,251}
      | github_pat_[A-Za-z0-9_]{22,255}
      | xox[abposr]-[A-Za-z0-9\-]{10,250}
      | AIza[0-9A-Za-z_\-]{35}
      | glpat-[A-Za-z0-9_\-]{20,50}
      | hf_[A-Za-z0-9]{30,40}
      | eyJ[A-Za-z0-9_\-]{8,2000}\.eyJ[A-Za-z0-9_\-]{8,4000}\.[A-Za-z0-9_\-]{8,2000}
    )
    (?![A-Za-z0-9_\-])
  | -----BEGIN[A-Z ]{0,20}PRIVATE\ KEY(?:\ BLOCK)?-----
    (?:[\s\S]{0,20000}?-----END[A-Z ]{0,20}PRIVATE\ KEY(?:\ BLOCK)?-----|[A-Za-z0-9+/=\s:\-,]{0,20000})
  | [Aa][Ww][Ss]_?(?i:secret_?(?:access_?)?key)["']?\s{0,3}[:=]{1,2}\s{0,3}["']?
    (?P<aws>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])
""", re.VERBOSE)
_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "_-")
# substrings one of which every secret contains (a quick test before the pattern)
_SECRET_HINTS = ("sk-", "k_live_", "k_test_", "AKIA", "ASIA", "AGPA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA", "ABIA",
                 "ACCA", "hp_", "ho_", "hu_", "hs_", "hr_", "github_pat_", "xox", "AIza", "glpat-", "hf_", "eyJ",
                 "PRIVATE KEY", "ecret", "ECRET")


def _find_secret(text: str) -> Iterable[tuple[int, int]]:
    if not any(hint in text for hint in _SECRET_HINTS):
        return
    for m in _SECRET.finditer(text):
        tok = m.group("tok")
        if tok is not None:
            s = m.start("tok")
            if s > 0 and text[s - 1] in _TOKEN_CHARS:
                continue  # inside a longer token (risk-..., mask_live_...)
            if tok.startswith(("sk-", "xox", "hf_", "glpat-", "sk_", "rk_", "pk_")):
                body = tok.split("-", 1)[1] if tok.startswith(("sk-", "xox", "glpat-")) else tok[3:]
                if not (any(c.isdigit() for c in body) and any(c.isalpha() for c in body)):
                    continue  # sk-learn-compatible-..., hf_hub_download...: words, not keys
            yield m.span("tok")
        elif m.group("aws") is not None:
            yield m.span("aws")
        else:
            yield m.span()


def _finder(kind: str, keep_reserved_ips: bool):
    if kind == "ip":
        return lambda text: _find_ip(text, keep_reserved_ips)
    return _FINDERS[kind]


_FINDERS = {"email": _find_email, "phone": _find_phone, "card": _find_card, "iban": _find_iban,
            "secret": _find_secret}

# RE2 patterns, one per type: a row the pattern does not match cannot hold that type (each is a
# necessary condition of the rules above, without their boundaries and checks)
PREFILTERS: dict[str, str] = {
    "email": r"[A-Za-z0-9_.%+\-=]@[A-Za-z0-9]",
    "phone": r"[0-9](?:[ .\-()/]{0,3}[0-9]){6}",
    "ip": r"[0-9]\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]|[0-9A-Fa-f]?:[0-9A-Fa-f]{0,4}:",
    "card": r"[0-9]{4}[ \-.]?[0-9]{4}",
    "iban": r"[A-Z]{2}[0-9]{2} ?[A-Z0-9]",
    "secret": r"sk-|sk_|rk_|pk_|AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA|gh[pousr]_|github_pat_|"
              r"xox[abposr]-|AIza|glpat-|hf_|eyJ|PRIVATE KEY|(?i:aws_?secret)",
}


# ---------------------------------------------------------------------------------------------
# one string: the reference path
# ---------------------------------------------------------------------------------------------

def find_pii(text: str, types: Sequence[str] = PII_TYPES, keep_reserved_ips: bool = True) -> list[tuple[int, int, str]]:
    """The findings of ``types`` in ``text``: ``(start, end, type)`` sorted by start, without
    overlaps (where two overlap, the type earlier in :data:`PRIORITY` wins, then the earlier
    start, then the longer span)."""
    found = [(PRIORITY[t], s, -(e - s), e, t) for t in types for s, e in _finder(t, keep_reserved_ips)(text) if e > s]
    if not found:
        return []
    found.sort()
    starts: list[int] = []
    spans: list[tuple[int, int, str]] = []
    for _, s, _, e, t in found:
        i = bisect_left(starts, s)
        if i > 0 and spans[i - 1][1] > s:
            continue
        if i < len(spans) and spans[i][0] < e:
            continue
        starts.insert(i, s)
        spans.insert(i, (s, e, t))
    return spans


def redact_text(text: str | None, types: Sequence[str] = PII_TYPES, placeholders: dict[str, str] | None = None,
                keep_reserved_ips: bool = True) -> tuple[str | None, dict[str, int]]:
    """``text`` with every finding replaced by its type's placeholder, and the count per type
    (every type of ``types``, zeros included). The reference for :func:`redact_table`."""
    counts = {t: 0 for t in types}
    if not text:
        return text, counts
    spans = find_pii(text, types, keep_reserved_ips)
    if not spans:
        return text, counts
    ph = {**PLACEHOLDERS, **(placeholders or {})}
    out, pos = [], 0
    for s, e, t in spans:
        out.append(text[pos:s])
        out.append(ph[t])
        counts[t] += 1
        pos = e
    out.append(text[pos:])
    return "".join(out), counts


# ---------------------------------------------------------------------------------------------
# the config and the stage
# ---------------------------------------------------------------------------------------------

class PiiConfig(StageConfig):
    """PII redaction (dataforge/stages/pii.py; docs/stages/pii.md). Off by default."""

    action: Literal["redact", "drop"] = "redact"
    """``redact``: replace each finding by its placeholder and keep the row; ``drop``: reject
    the rows holding any finding (``drop_reason`` ``pii:<types>``; their text redacted too)."""
    types: list[PiiType] = Field(default_factory=lambda: list(PII_TYPES))
    """The types to find (all by default); the count column of a type not searched is null."""
    placeholders: dict[PiiType, str] = Field(default_factory=dict)
    """Placeholders replacing the defaults (``<EMAIL>``, ``<PHONE>``, ``<IP_ADDRESS>``,
    ``<CARD_NUMBER>``, ``<IBAN>``, ``<SECRET>``) for some types."""
    text_columns: list[str] = Field(default_factory=lambda: list(DEFAULT_TEXT_COLUMNS))
    """The columns redacted when present: strings, lists of strings, and lists of structs with
    a string ``content`` (``messages``). Must include ``text``."""
    keep_reserved_ips: bool = True
    """Keep loopback, unspecified and 240/4 addresses (``127.0.0.1``, ``0.0.0.0``, ``::1``,
    ``255.255.255.0``): they name no host."""

    @field_validator("types")
    @classmethod
    def _types(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError(f"name at least one of {', '.join(PII_TYPES)}")
        return [t for t in PII_TYPES if t in v]

    @field_validator("placeholders")
    @classmethod
    def _placeholders(cls, v: dict[str, str]) -> dict[str, str]:
        for t, p in v.items():
            if not p.strip():
                raise ValueError(f"the placeholder of {t!r} is empty")
        return v

    @field_validator("text_columns")
    @classmethod
    def _text_columns(cls, v: list[str]) -> list[str]:
        if "text" not in v:
            raise ValueError("must include 'text'")
        return list(dict.fromkeys(v))


def _list_of_strings(s: str) -> list[str]:
    return [x.strip() for x in str(s).split(",") if x.strip()]


def _string_type(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _column_kind(t: pa.DataType) -> str | None:
    """How a column holds text: ``str``, ``list`` (of strings), ``messages`` (list of structs
    with a string ``content``), or None (no text: skipped)."""
    if _string_type(t):
        return "str"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        v = t.value_type
        if _string_type(v):
            return "list"
        if pa.types.is_struct(v) and v.get_field_index("content") >= 0 and _string_type(v.field("content").type):
            return "messages"
    return None


def _redact_strings(arr: pa.Array, types: Sequence[str], placeholders: dict[str, str],
                    keep_reserved_ips: bool) -> tuple[pa.Array, np.ndarray]:
    """The bulk path over one string array: (redacted array, counts of shape (len, len(types))).

    One RE2 pass with every type's prefilter finds the rows that can hold anything (most hold
    nothing); one pass per type over those rows says which types to look for in each; the
    Python rules run on those rows for those types only."""
    n = len(arr)
    counts = np.zeros((n, len(types)), np.int32)
    if n == 0 or arr.null_count == n:
        return arr, counts
    anything = "|".join(f"(?:{PREFILTERS[t]})" for t in types)
    rows = np.flatnonzero(pc.fill_null(pc.match_substring_regex(arr, anything), False).to_numpy(zero_copy_only=False))
    if rows.size == 0:
        return arr, counts
    candidates = arr.take(pa.array(rows))
    masks = np.stack([pc.fill_null(pc.match_substring_regex(candidates, PREFILTERS[t]), False)
                      .to_numpy(zero_copy_only=False) for t in types])
    changed = np.zeros(n, bool)
    new_values: list[str] = []
    for k, (r, text) in enumerate(zip(rows.tolist(), candidates.to_pylist())):
        row_types = [t for j, t in enumerate(types) if masks[j, k]]
        new, c = redact_text(text, row_types, placeholders, keep_reserved_ips)
        for j, t in enumerate(types):
            counts[r, j] = c.get(t, 0)
        if new != text:
            changed[r] = True
            new_values.append(new)
    if not new_values:
        return arr, counts
    return pc.replace_with_mask(arr, pa.array(changed), pa.array(new_values, arr.type)), counts


def _redact_column(col: pa.ChunkedArray, kind: str, types: Sequence[str], placeholders: dict[str, str],
                   keep_reserved_ips: bool) -> tuple[pa.ChunkedArray, np.ndarray]:
    chunks, counts = [], []
    for chunk in col.chunks:
        if kind == "str":
            new, c = _redact_strings(chunk, types, placeholders, keep_reserved_ips)
        else:
            offs = chunk.offsets.to_numpy()
            values = chunk.values.slice(int(offs[0]), int(offs[-1] - offs[0]))
            offsets = pa.array(offs - offs[0], pa.int64() if pa.types.is_large_list(chunk.type) else pa.int32())
            mask = chunk.is_null() if chunk.null_count else None
            strings = pc.struct_field(values, "content") if kind == "messages" else values
            new_strings, fc = _redact_strings(strings, types, placeholders, keep_reserved_ips)
            c = np.zeros((len(chunk), len(types)), np.int32)
            if len(values):
                np.add.at(c, np.repeat(np.arange(len(chunk)), np.diff(offs)), fc)
            if mask is not None:
                c[mask.to_numpy(zero_copy_only=False)] = 0
            if new_strings is strings:
                new = chunk
            else:
                if kind == "messages":
                    st = values.type
                    children = [new_strings if st.field(i).name == "content" else pc.struct_field(values, [i])
                                for i in range(st.num_fields)]
                    values = pa.StructArray.from_arrays(children, fields=list(st),
                                                        mask=values.is_null() if values.null_count else None)
                else:
                    values = new_strings
                cls = pa.LargeListArray if pa.types.is_large_list(chunk.type) else pa.ListArray
                new = cls.from_arrays(offsets, values, type=chunk.type, mask=mask)
        chunks.append(new)
        counts.append(c)
    total = np.concatenate(counts) if counts else np.zeros((0, len(types)), np.int32)
    return pa.chunked_array(chunks, col.type), total


def _redact_value_reference(value: Any, kind: str, types, placeholders, keep_reserved_ips) -> tuple[Any, dict]:
    total = {t: 0 for t in types}
    if value is None:
        return value, total
    if kind == "str":
        return redact_text(value, types, placeholders, keep_reserved_ips)
    out = []
    for item in value:
        if kind == "messages":
            if item is None:
                out.append(item)
                continue
            new, c = redact_text(item["content"], types, placeholders, keep_reserved_ips)
            out.append({**item, "content": new})
        else:
            new, c = redact_text(item, types, placeholders, keep_reserved_ips)
            out.append(new)
        for t in types:
            total[t] += c[t]
    return out, total


def redact_table(table: pa.Table, cfg: PiiConfig, bulk: bool = True) -> tuple[pa.Table, np.ndarray]:
    """``table`` with its text columns redacted, and the findings per row and type (shape
    ``(rows, len(cfg.types))``, summed over the columns and messages of a row). ``bulk=False``
    runs :func:`redact_text` on every value (the reference path)."""
    types = list(cfg.types)
    counts = np.zeros((table.num_rows, len(types)), np.int32)
    for name in cfg.text_columns:
        if name not in table.column_names:
            continue
        kind = _column_kind(table.schema.field(name).type)
        if kind is None:
            continue
        col = table.column(name)
        if bulk:
            new, c = _redact_column(col, kind, types, cfg.placeholders, cfg.keep_reserved_ips)
        else:
            values, c = [], np.zeros((table.num_rows, len(types)), np.int32)
            for i, v in enumerate(col.to_pylist()):
                nv, vc = _redact_value_reference(v, kind, types, cfg.placeholders, cfg.keep_reserved_ips)
                values.append(nv)
                c[i] = [vc[t] for t in types]
            new = pa.chunked_array([pa.array(values, col.type)], col.type)
        counts += c
        i = table.column_names.index(name)
        table = table.set_column(i, table.schema.field(i), new)
    return table, counts


def apply_pii(table: pa.Table, cfg: PiiConfig, bulk: bool = True) -> tuple[pa.Table, pa.Table]:
    """The stage: ``(kept, rejected)``. Both carry one ``int32`` count column per type
    (``pii_email``, ..., null for a type not in ``cfg.types``). ``redact``: every row is kept,
    redacted. ``drop``: rows with any finding are rejected, redacted, with ``drop_reason``
    ``pii:<types found>`` (in :data:`PII_TYPES` order). A disabled stage returns the table
    unchanged and no rejected rows."""
    if not cfg.enabled:
        return table, with_drop(table.slice(0, 0), STAGE_NAME, [])
    table = table.drop_columns([c for c in COUNT_COLUMNS.values() if c in table.column_names])
    out, counts = redact_table(table, cfg, bulk=bulk)
    for t in PII_TYPES:
        if t in cfg.types:
            arr = pa.array(counts[:, cfg.types.index(t)], pa.int32())
        else:
            arr = pa.nulls(table.num_rows, pa.int32())
        out = out.append_column(pa.field(COUNT_COLUMNS[t], pa.int32()), arr)
    if cfg.action == "redact" or table.num_rows == 0:
        return out, with_drop(out.slice(0, 0), STAGE_NAME, [])
    hit = counts.sum(axis=1) > 0
    reasons = ["pii:" + ",".join(t for j, t in enumerate(cfg.types) if row[j]) for row in counts[hit]]
    mask = pa.array(hit)
    return out.filter(pc.invert(mask)), with_drop(out.filter(mask), STAGE_NAME, reasons)


def _apply(table: pa.Table, cfg: Any) -> tuple[pa.Table, pa.Table]:
    section = cfg if isinstance(cfg, PiiConfig) else getattr(cfg, STAGE_NAME)
    return apply_pii(table, section)


def report(kept: pa.Table, rejected: pa.Table) -> list[str]:
    """Lines for the standalone command: findings per type, rows touched, drops."""
    totals, rows_with = {}, 0
    hit = None
    for t in PII_TYPES:
        col = COUNT_COLUMNS[t]
        vals = [tbl.column(col) for tbl in (kept, rejected) if col in tbl.column_names and tbl.num_rows]
        totals[t] = sum(int(pc.sum(v).as_py() or 0) for v in vals)
        if vals:
            flags = np.concatenate([pc.fill_null(v, 0).to_numpy() > 0 for v in vals])
            hit = flags if hit is None else hit | flags
    rows_with = int(hit.sum()) if hit is not None else 0
    lines = [f"pii: {rows_with} of {kept.num_rows + rejected.num_rows} rows held PII; "
             + ", ".join(f"{t} {totals[t]}" for t in PII_TYPES)]
    if rejected.num_rows:
        lines.append(f"pii: {rejected.num_rows} rows dropped (redacted in rejected.parquet)")
    return lines


STAGE = register(Stage(
    name=STAGE_NAME, order=160, kind=CURATION, config_model=PiiConfig, scope="shard", apply=_apply,
    column_prefix="pii_", columns=tuple(COUNT_COLUMNS.values()),
    summary="redacts e-mails, phones, IPs, Luhn-valid cards, mod-97 IBANs and API keys to typed placeholders "
            "(or drops the rows)",
    drop_reasons=("pii:<types found> (pii:email, pii:phone,card, ...; action: drop)",),
    cli_options=(
        CliOption("action", "action", "redact (default): replace by placeholders; drop: reject rows with PII"),
        CliOption("types", "types", "comma-separated types to find (default all: email,phone,ip,card,iban,secret)",
                  parse=_list_of_strings),
        CliOption("columns", "text_columns", "comma-separated columns to redact (must include text; "
                  "default: the text-bearing columns of the sample schema)", parse=_list_of_strings),
    ),
    report=report,
    module=__name__,
))

__all__ = ["COUNT_COLUMNS", "DEFAULT_TEXT_COLUMNS", "IBAN_LENGTHS", "PII_TYPES", "PLACEHOLDERS", "PREFILTERS",
           "PiiConfig", "STAGE", "apply_pii", "card_brand", "find_pii", "iban_valid", "luhn_valid", "redact_table",
           "redact_text", "report"]
