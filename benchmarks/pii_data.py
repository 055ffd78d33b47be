"""The PII evaluation set: real text with planted PII and planted look-alikes.

Contexts are real passages from the shared data (Pile documents' ``contents``, Alpaca
outputs, GSM8K questions and worked solutions). Into each passage, at a word boundary, go one
planted **PII** item (e-mail, phone, IP, card, IBAN, secret) and one planted **look-alike**
(versions, dates, times, ISBNs, arithmetic, numbers failing Luhn or the IBAN checksum, order
numbers, ...), each inside a short carrier phrase ("Contact: {}.", "({})", ...).

Every item is *generated*, not matched: values are built digit by digit from format masks
(``+44 20 #### ####``), brand prefixes, per-country BBAN layouts and their check digits (Luhn,
ISO 7064 mod-97 and ISBN check digits are computed here, independently of the detector), random
alphabets for tokens. Nothing here imports or reads the detector's regular expressions.

Held out: each type's formats and carriers are split in two halves by index (even: split
``A``, odd: split ``B``), and so are the contexts (Pile documents 0-499: ``A``; 500-999, Alpaca
and GSM8K: ``B``). Split ``C`` (``build_c``) has its own formats, carriers, look-alike kinds and
contexts (FLAN CoT rationales, the Claude-rated Alpaca subset, GSM8K test), written after the
detector's rules were settled on A and B; benchmarks/RESULTS.md ("PII redaction") says what was changed after
reading which split.

    .venv/bin/python benchmarks/pii_data.py [--rows 6000 --rows-c 3000 --seed 20261206]

writes ``benchmarks/.data/pii/planted.jsonl``: one row per passage, ``{"id", "split", "source",
"text", "items": [{"role": "pii"|"lookalike", "type", "format", "value", "start", "end"}]}``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import re
import string
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "benchmarks" / ".data" / "pii"

UPPER, LOWER, DIGITS = string.ascii_uppercase, string.ascii_lowercase, string.digits
ALNUM = UPPER + LOWER + DIGITS


def shared_data() -> Path:
    return Path(os.environ.get("DATAFORGE_SHARED_DATA", REPO.parent / "shared" / "data"))


# ------------------------------------------------------------------------------------------
# checksums, written here on their own
# ------------------------------------------------------------------------------------------

def luhn_check_digit(payload: str) -> str:
    """The digit that makes ``payload + digit`` pass Luhn (doubling from the right of the
    payload, i.e. every second digit starting with the last payload digit)."""
    s = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2
            d = d // 10 + d % 10
        s += d
    return str((10 - s % 10) % 10)


def iban_check_digits(country: str, bban: str) -> str:
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{98 - int(numeric) % 97:02d}"


def isbn10(rng: random.Random) -> str:
    body = [rng.randrange(10) for _ in range(9)]
    c = (11 - sum((10 - i) * d for i, d in enumerate(body)) % 11) % 11
    return "".join(map(str, body)) + ("X" if c == 10 else str(c))


def isbn13(rng: random.Random) -> str:
    body = [9, 7, rng.choice([8, 9])] + [rng.randrange(10) for _ in range(9)]
    c = (10 - sum(d * (1 if i % 2 == 0 else 3) for i, d in enumerate(body)) % 10) % 10
    return "".join(map(str, body)) + str(c)


# ------------------------------------------------------------------------------------------
# PII generators: (format name, function rng -> value)
# ------------------------------------------------------------------------------------------

FIRST = ["john", "maria", "wei", "fatima", "olga", "james", "priya", "lucas", "ana", "kenji", "amara", "noah",
         "sofia", "ahmed", "emma", "li", "chloe", "diego", "hannah", "yusuf"]
LAST = ["smith", "garcia", "chen", "khan", "ivanova", "brown", "patel", "silva", "costa", "tanaka", "okafor",
        "miller", "rossi", "hassan", "dubois", "wang", "martin", "lopez", "schmidt", "yilmaz"]
DOMAINS = ["gmail.com", "example.org", "mail.example.co.uk", "uni-heidelberg.de", "company.io", "dept.cs.stanford.edu",
           "outlook.fr", "foo-bar.net", "post.example.com.au", "health.gov", "startup.dev", "mx1.mail-host.info",
           "yahoo.co.jp", "web.de", "research.example.museum", "t-online.de"]


def fill(mask: str, rng: random.Random) -> str:
    """``#``: any digit, ``D``: 1-9, ``N``: 2-9, ``A``: an upper-case letter, ``C``: letter or digit."""
    out = []
    for ch in mask:
        out.append(rng.choice(DIGITS) if ch == "#" else rng.choice("23456789") if ch == "N"
                   else rng.choice("123456789") if ch == "D"
                   else rng.choice(UPPER) if ch == "A" else rng.choice(UPPER + DIGITS) if ch == "C" else ch)
    return "".join(out)


def _local(rng: random.Random) -> str:
    f, l = rng.choice(FIRST), rng.choice(LAST)
    return rng.choice([f"{f}.{l}", f"{f}_{l}", f"{f[0]}{l}", f"{f}+{rng.choice(['news', 'shop', 'x1'])}",
                       f"{f}.{l}{rng.randrange(1, 99)}", f"{f}-{l}", f"{l}.{f}.{rng.randrange(1970, 2005)}"])


EMAIL_FORMATS = [
    ("plain", lambda r: f"{_local(r)}@{r.choice(DOMAINS)}"),
    ("angle", lambda r: f"<{_local(r)}@{r.choice(DOMAINS)}>"),
    ("capitalised", lambda r: f"{_local(r).title()}@{r.choice(DOMAINS).upper()}"),
    ("mailto", lambda r: f"mailto:{_local(r)}@{r.choice(DOMAINS)}"),
    ("digits-domain", lambda r: f"{_local(r)}@mail{r.randrange(2, 99)}.{r.choice(['com', 'net', 'org'])}"),
    ("quoted-in-code", lambda r: f"\"{_local(r)}@{r.choice(DOMAINS)}\""),
]
PHONE_FORMATS = [(m, (lambda mm: lambda r: fill(mm, r))(m)) for m in [
    "+44 20 #### ####", "+1-N##-N##-####", "+33 6 ## ## ## ##", "+1 (N##) N##-####", "+49 30 ########",
    "+44 (0)20 #### ####", "+91 9#### #####", "+61 2 #### ####", "+81-3-####-####", "+7 495 N##-##-##",
    "+353 1 N## ####", "+34 6## ### ###", "+39 06 #### ####", "+86 10 #### ####", "+55 11 9####-####",
    "+27 21 N## ####", "+4420########", "+1.N##.N##.####", "+41 44 ### ## ##", "+49 (0)171 #######",
    "(020) #### ####", "020 #### ####", "07### ######", "06 ## ## ## ##", "01 ## ## ## ##", "0D#-#######",
    "(N##) N##-####", "N##-N##-####", "N##.N##.####", "1-800-N##-####", "N## N## ####", "0044 20 #### ####",
    "(0D) #### ####", "0D-####-####", "030/#######", "0D.##.##.##.##",
]]
# with a cue in the carrier
PHONE_CUE_FORMATS = [
    ("cue-run", "Tel: {}", "0D########"), ("cue-local", "call {}", "N##-####"),
    ("cue-run-us", "Phone: {}", "N##N######"), ("cue-fax", "Fax: {}", "N## N## ####"),
    ("cue-mobile", "Mobile: {}", "07#########"), ("cue-whatsapp", "WhatsApp {}", "+N#########"),
]


def _ipv4_host(r: random.Random) -> ipaddress.IPv4Address:
    while True:
        kind = r.random()
        if kind < 0.2:
            a = ipaddress.IPv4Address(f"192.168.{r.randrange(256)}.{r.randrange(1, 255)}")
        elif kind < 0.3:
            a = ipaddress.IPv4Address(f"10.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(1, 255)}")
        else:
            a = ipaddress.IPv4Address(r.getrandbits(32))
        if not (a.is_loopback or a.is_unspecified or a.is_reserved or a.is_multicast or a.is_link_local):
            return a


def _ipv6_host(r: random.Random) -> ipaddress.IPv6Address:
    groups = [r.choice([0x2001, 0x2a02, 0x2600, 0xfe80, 0x2404, 0x2c0f])]
    for _ in range(7):
        groups.append(0 if r.random() < 0.3 else r.getrandbits(16))
    return ipaddress.IPv6Address(":".join(f"{g:x}" for g in groups))


IP_FORMATS = [
    ("v4", lambda r: str(_ipv4_host(r))),
    ("v4-port", lambda r: f"{_ipv4_host(r)}:{r.randrange(1024, 65535)}"),
    ("v4-url", lambda r: f"http://{_ipv4_host(r)}/{r.choice(['admin', 'login', 'api/v1'])}"),
    ("v4-cidr", lambda r: f"{_ipv4_host(r)}/{r.randrange(8, 31)}"),
    ("v6-full", lambda r: _ipv6_host(r).exploded),
    ("v6-compressed", lambda r: _ipv6_host(r).compressed),
    ("v6-zone", lambda r: f"fe80::{r.getrandbits(16):x}:{r.getrandbits(16):x}%eth{r.randrange(3)}"),
    ("v6-bracket-port", lambda r: f"[{_ipv6_host(r).compressed}]:{r.randrange(1024, 65535)}"),
    ("v6-upper", lambda r: _ipv6_host(r).compressed.upper()),
    ("v6-mapped-v4", lambda r: f"::ffff:{_ipv4_host(r)}"),
    ("v4-log", lambda r: f"from {_ipv4_host(r)} port {r.randrange(1024, 65535)}"),
    ("v6-leading-zeros-kept", lambda r: ":".join(f"{g:04x}" for g in [0x2001, 0xdb8] + [r.getrandbits(16) for _ in range(6)])),
]

CARD_BRANDS = [("visa", ["4"], 16), ("mastercard", ["51", "52", "53", "54", "55", "2221", "2720"], 16),
               ("amex", ["34", "37"], 15), ("discover", ["6011", "65", "644"], 16), ("jcb", ["3528", "3589"], 16),
               ("diners", ["36", "38"], 14), ("unionpay", ["62"], 16), ("visa19", ["4"], 19)]


def card_number(r: random.Random, brand: str | None = None, valid: bool = True) -> tuple[str, str]:
    name, prefixes, length = r.choice([b for b in CARD_BRANDS if brand is None or b[0] == brand])
    p = r.choice(prefixes)
    payload = p + "".join(r.choice(DIGITS) for _ in range(length - len(p) - 1))
    check = luhn_check_digit(payload)
    if not valid:
        check = str((int(check) + r.randrange(1, 10)) % 10)
    return name, payload + check


def group_card(num: str, sep: str) -> str:
    if len(num) == 15:
        return sep.join([num[:4], num[4:10], num[10:]])
    if len(num) == 14:
        return sep.join([num[:4], num[4:10], num[10:]])
    return sep.join(num[i:i + 4] for i in range(0, len(num), 4))


CARD_FORMATS = [
    ("spaces", lambda r: group_card(card_number(r)[1], " ")),
    ("dashes", lambda r: group_card(card_number(r)[1], "-")),
    ("run", lambda r: card_number(r)[1]),
    ("amex-spaces", lambda r: group_card(card_number(r, "amex")[1], " ")),
    ("visa-labelled", lambda r: "Visa " + group_card(card_number(r, "visa")[1], " ")),
    ("mc-dashes", lambda r: group_card(card_number(r, "mastercard")[1], "-")),
]

# BBAN layouts: n digits, a letters, c letters or digits (SWIFT registry notation)
BBAN = {"DE": "8n10n", "GB": "4a6n8n", "FR": "5n5n11c2n", "ES": "4n4n1n1n10n", "IT": "1a5n5n12c", "NL": "4a10n",
        "BE": "3n7n2n", "CH": "5n12c", "AT": "5n11n", "PL": "8n16n", "PT": "4n4n11n2n", "IE": "4a6n8n",
        "SE": "3n16n1n", "NO": "4n6n1n", "DK": "4n9n1n", "FI": "3n11n", "LU": "3n13c", "CZ": "4n6n10n",
        "HU": "3n4n1n15n1n", "GR": "3n4n16c", "RO": "4a16c", "TR": "5n1n16c", "SA": "2n18c", "AE": "3n16n",
        "BR": "8n5n10n1a1c", "MT": "4a5n18c", "IS": "4n2n6n10n", "SI": "5n8n2n", "HR": "7n10n", "LT": "5n11n"}


def bban(country: str, r: random.Random) -> str:
    out = []
    for count, kind in re.findall(r"(\d+)([nac])", BBAN[country]):
        alphabet = DIGITS if kind == "n" else UPPER if kind == "a" else UPPER + DIGITS
        out.extend(r.choice(alphabet) for _ in range(int(count)))
    return "".join(out)


def iban(r: random.Random, valid: bool = True, country: str | None = None) -> str:
    c = country or r.choice(sorted(BBAN))
    b = bban(c, r)
    check = iban_check_digits(c, b)
    if not valid:  # 02..97 are distinct mod 97 (98 is 1 mod 97 like 01): any other pair fails
        check = f"{r.choice([k for k in range(2, 98) if k != int(check)]):02d}"
    return c + check + b


def group4(s: str) -> str:
    return " ".join(s[i:i + 4] for i in range(0, len(s), 4))


IBAN_FORMATS = [
    ("grouped", lambda r: group4(iban(r))),
    ("compact", lambda r: iban(r)),
    ("labelled-grouped", lambda r: "IBAN " + group4(iban(r))),
    ("labelled-compact", lambda r: "IBAN: " + iban(r)),
]


def tok(r: random.Random, alphabet: str, n: int) -> str:
    while True:
        t = "".join(r.choice(alphabet) for _ in range(n))
        if any(c.isdigit() for c in t) and any(c.isalpha() for c in t):
            return t


def _jwt(r: random.Random) -> str:
    import base64

    def b64(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    head = b64({"alg": "HS256", "typ": "JWT"})
    body = b64({"sub": str(r.randrange(10**9)), "name": r.choice(FIRST).title(), "iat": 1516239022 + r.randrange(10**6)})
    return f"{head}.{body}.{tok(r, ALNUM + '-_', 43)}"


def _pem(r: random.Random) -> str:
    lines = [tok(r, ALNUM + "+/", 64) for _ in range(r.randrange(3, 8))]
    kind = r.choice(["RSA ", "", "EC ", "OPENSSH "])
    return f"-----BEGIN {kind}PRIVATE KEY-----\n" + "\n".join(lines) + f"\n-----END {kind}PRIVATE KEY-----"


SECRET_FORMATS = [
    ("openai-legacy", lambda r: "sk-" + tok(r, ALNUM, 48)),
    ("openai-proj", lambda r: "sk-proj-" + tok(r, ALNUM + "-_", 120)),
    ("aws-access-key", lambda r: "AKIA" + "".join(r.choice(UPPER + "234567") for _ in range(16))),
    ("github-pat", lambda r: "ghp_" + tok(r, ALNUM, 36)),
    ("slack-bot", lambda r: f"xoxb-{r.randrange(10**11, 10**12)}-{r.randrange(10**12, 10**13)}-{tok(r, ALNUM, 24)}"),
    ("google-api", lambda r: "AIza" + tok(r, ALNUM + "-_", 35)),
    ("anthropic", lambda r: "sk-ant-api03-" + tok(r, ALNUM + "-_", 93) + "AA"),
    ("github-oauth", lambda r: "gho_" + tok(r, ALNUM, 36)),
    ("stripe-live", lambda r: "sk_live_" + tok(r, ALNUM, 24)),
    ("jwt", _jwt),
    ("huggingface", lambda r: "hf_" + tok(r, ALNUM, 34)),
    ("pem-block", _pem),
    ("gitlab", lambda r: "glpat-" + tok(r, ALNUM + "-_", 20)),
    ("aws-secret-assign", lambda r: "aws_secret_access_key = " + tok(r, ALNUM + "/+", 40)),
]

PII_FORMATS = {"email": EMAIL_FORMATS, "phone": PHONE_FORMATS, "ip": IP_FORMATS, "card": CARD_FORMATS,
               "iban": IBAN_FORMATS, "secret": SECRET_FORMATS}

# the part of a generated value that must be gone (labels and wrappers in a format stay)
_STRIP_PREFIXES = ("mailto:", "Visa ", "IBAN: ", "IBAN ", "aws_secret_access_key = ", "from ", "http://")


def core_of(value: str, kind: str) -> str:
    for p in _STRIP_PREFIXES:
        if value.startswith(p):
            value = value[len(p):]
    if kind == "email":
        value = value.strip("<>\"")
    if kind == "ip":
        value = value.split(" port ")[0]
        if value.startswith("["):
            value = value[1:value.index("]")]
        elif re.fullmatch(r"[0-9.]+[:/].*", value):  # v4 with a port, a prefix length or a path
            value = re.split(r"[/:]", value)[0]
        value = value.split("%")[0]
    return value


CARRIERS = {
    "email": ["Contact: {}.", "write to {} for details", "E-mail {}", "({})", "Send your CV to {}.", "{}",
              "reach me at {} anytime", "cc: {}"],
    "phone": ["Contact: {}.", "({})", "our office on {} or", "{}", "Questions? {}.", "ring {} today",
              "Hotline {}.", "number {} (weekdays)"],
    "ip": ["connected to {}", "{}", "server at {} is down", "({})", "request came {} yesterday", "gateway {}."],
    "card": ["Card: {}", "{}", "charged to {} on", "(card {})", "number {}.", "paid with {} and"],
    "iban": ["{}", "transfer to {} please", "Account {}.", "({})", "beneficiary {}", "pay into {} by Friday"],
    "secret": ["{}", "api_key = \"{}\"", "export TOKEN={}", "key: {}", "Authorization: Bearer {}", "token ({})"],
}


# ------------------------------------------------------------------------------------------
# look-alikes: (category, carrier, generator) — each must come out unchanged
# ------------------------------------------------------------------------------------------

def _version(r: random.Random) -> str:
    return f"{r.randrange(0, 12)}.{r.randrange(0, 30)}.{r.randrange(0, 40)}"


def _date(r: random.Random) -> str:
    y, m, d = r.randrange(1950, 2031), r.randrange(1, 13), r.randrange(1, 29)
    return r.choice([f"{y}-{m:02d}-{d:02d}", f"{d:02d}.{m:02d}.{y}", f"{m:02d}/{d:02d}/{y}", f"{d}/{m}/{y}",
                     f"{y}/{m:02d}/{d:02d}", f"{y}{m:02d}{d:02d}", f"{d:02d}-{m:02d}-{y}"])


def _order(r: random.Random) -> str:
    return "".join(r.choice(DIGITS) for _ in range(r.randrange(10, 21)))


def _arith(r: random.Random) -> str:
    a, b = r.randrange(2, 5000), r.randrange(2, 5000)
    return r.choice([f"{a} + {b} = {a + b}", f"{a} * {b} = {a * b}", f"{a * b} / {b} = {a}", f"{a}+{b}={a + b}",
                     f"({a} + {b}) x 2 = {2 * (a + b)}", f"{a:,} + {b:,} = {a + b:,}", f"<<{a}*{b}={a * b}>>"])


LOOKALIKES = [
    ("version", "Python {}", lambda r: f"3.{r.randrange(6, 14)}.{r.randrange(0, 20)}"),
    ("version", "upgrade to {}", lambda r: "v" + _version(r)),
    ("version-4part", "version {}", lambda r: f"{r.randrange(1, 12)}.{r.randrange(0, 20)}.{r.randrange(0, 99)}.{r.randrange(0, 99)}"),
    ("version-4part", "build {}", lambda r: f"10.0.{r.randrange(10000, 22631)}.{r.randrange(1, 3000)}"),
    ("version-4part", "{}", lambda r: f"{r.randrange(1, 10)}.{r.randrange(0, 10)}.{r.randrange(0, 10)}.{r.randrange(0, 10)}"),
    ("version-4part", "Chrome {}", lambda r: f"{r.randrange(90, 130)}.0.{r.randrange(4000, 6500)}.{r.randrange(0, 200)}"),
    ("version-4part-bare", "{}", lambda r: ".".join(str(r.randrange(0, 21)) for _ in range(4))),
    ("version-4part", "release {} notes", lambda r: f"{r.randrange(1, 30)}.{r.randrange(0, 13)}.{r.randrange(0, 30)}.{r.randrange(0, 300)}"),
    ("version-semver", "({})", lambda r: _version(r) + r.choice(["-beta.1", "-rc.2", "+build.5", "-alpha"])),
    ("date", "on {}", _date),
    ("date", "{}", _date),
    ("datetime", "at {}", lambda r: f"{_date(r)} {r.randrange(24):02d}:{r.randrange(60):02d}"),
    ("datetime", "stamp {}", lambda r: f"{r.randrange(2000, 2030)}-{r.randrange(1, 13):02d}-{r.randrange(1, 29):02d}T"
                                        f"{r.randrange(24):02d}:{r.randrange(60):02d}:{r.randrange(60):02d}Z"),
    ("time", "at {}", lambda r: f"{r.randrange(24):02d}:{r.randrange(60):02d}:{r.randrange(60):02d}"),
    ("isbn", "ISBN {}", lambda r: (lambda s: f"{s[0]}-{s[1:4]}-{s[4:9]}-{s[9]}")(isbn10(r))),
    ("isbn", "ISBN-13: {}", lambda r: (lambda s: f"{s[:3]}-{s[3]}-{s[4:6]}-{s[6:12]}-{s[12]}")(isbn13(r))),
    ("isbn", "ISBN {}", isbn13),
    ("isbn", "({})", lambda r: (lambda s: f"{s[:3]}-{s[3:5]}-{s[5:9]}-{s[9:12]}-{s[12]}")(isbn13(r))),
    ("arithmetic", "{}", _arith),
    ("arithmetic", "so {}", lambda r: f"{r.randrange(1, 100)}.{r.randrange(10**4, 10**6)}"),
    ("card-luhn-fail", "Card: {}", lambda r: group_card(card_number(r, valid=False)[1], r.choice([" ", "-"]))),
    ("card-luhn-fail", "{}", lambda r: card_number(r, valid=False)[1]),
    ("iban-checksum-fail", "IBAN {}", lambda r: group4(iban(r, valid=False))),
    ("iban-checksum-fail", "{}", lambda r: iban(r, valid=False)),
    ("order-number", "Order #{}", _order),
    ("order-number", "tracking number {}", _order),
    ("order-number", "reference {}", _order),
    ("order-number", "ID {}", lambda r: "".join(r.choice(DIGITS) for _ in range(16))),
    ("zip", "{}", lambda r: r.choice([f"{r.randrange(10000, 99999)}", f"{r.randrange(10000, 99999)}-{r.randrange(1000, 9999)}",
                                      f"SW{r.randrange(1, 20)}A {r.randrange(1, 9)}AA"])),
    ("money", "costs {}", lambda r: r.choice([f"${r.randrange(1, 99999):,}.{r.randrange(100):02d}",
                                             f"€{r.randrange(1, 9999)},{r.randrange(100):02d}",
                                             f"{r.randrange(1, 999)} {r.randrange(100, 999)} {r.randrange(100, 999)} USD"])),
    ("coordinates", "at {}", lambda r: f"{r.uniform(-89, 89):.4f}, {r.uniform(-179, 179):.4f}"),
    ("hash", "commit {}", lambda r: "".join(r.choice("0123456789abcdef") for _ in range(40))),
    ("hash", "id {}", lambda r: f"{r.getrandbits(32):08x}-{r.getrandbits(16):04x}-4{r.getrandbits(12):03x}-"
                                f"{r.choice('89ab')}{r.getrandbits(12):03x}-{r.getrandbits(48):012x}"),
    ("ip-invalid", "{}", lambda r: f"{r.randrange(256, 999)}.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(256)}"),
    ("dotted-5part", "OID {}", lambda r: "1.3.6.1." + ".".join(str(r.randrange(1, 400)) for _ in range(r.randrange(2, 6)))),
    ("ipv6-lookalike", "{}", lambda r: r.choice(["std::vector", "Foo::Bar::baz", "a::b", "x :: Int", "self::$x",
                                                  "std::map<int, int>", "crate::util", "Add::add"])),
    ("mac", "MAC {}", lambda r: ":".join(f"{r.getrandbits(8):02X}" for _ in range(6))),
    ("page-range", "pp. {}", lambda r: (lambda a: f"{a}-{a + r.randrange(1, 40)}")(r.randrange(1, 2000))),
    ("year-range", "({})", lambda r: (lambda a: f"{a}-{a + r.randrange(1, 30)}")(r.randrange(1900, 2000))),
    ("score", "won {}", lambda r: f"{r.randrange(10)}-{r.randrange(10)}"),
    ("phone-ish-short", "ext. {}", lambda r: str(r.randrange(100, 9999))),
    ("secret-lookalike", "{}", lambda r: r.choice(["sk-learn", "task-force", "desk-top", "risk-averse", "AKIA",
                                                    "ghp_", "xoxo", "hf_hub_download", "sk-...", "YOUR_API_KEY",
                                                    "sk-your-key-here", "eyJhbGciOi"])),
    ("email-lookalike", "{}", lambda r: r.choice(["@username", "icon@2x.png", "user@localhost", "pkg@1.2.3",
                                                   "logo@3x.svg", "a @ b", "@media screen", "support at example dot com"])),
    ("decimal-list", "values {}", lambda r: ", ".join(f"{r.uniform(0, 100):.2f}" for _ in range(5))),
    ("measurement", "{}", lambda r: f"{r.randrange(1, 999)} x {r.randrange(1, 999)} x {r.randrange(1, 999)} mm"),
]


# ------------------------------------------------------------------------------------------
# contexts and assembly
# ------------------------------------------------------------------------------------------

def load_contexts(data: Path) -> list[tuple[str, str, str]]:
    """(split, source, passage) of real text: a window of at most ~1,200 characters."""
    out: list[tuple[str, str, str]] = []
    with (data / "web" / "pile_1k.jsonl").open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            doc = json.loads(line)
            text = doc["contents"][:1200]
            out.append(("A" if i < 500 else "B", "pile:" + doc["metadata"]["pile_set_name"], text))
    alpaca = json.loads((data / "alpaca" / "random_9k.json").read_text(encoding="utf-8"))
    for row in alpaca[:600]:
        text = (row["instruction"] + "\n" + (row["input"] + "\n" if row["input"] else "") + row["output"])[:1200]
        out.append(("B", "alpaca", text))
    with (data / "gsm8k" / "train.jsonl").open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= 600:
                break
            row = json.loads(line)
            out.append(("B", "gsm8k", row["question"] + "\n" + row["answer"]))
    return out


def _boundaries(text: str) -> list[int]:
    """Places to insert: after a space or newline that follows a sentence end or a word."""
    spots = [m.end() for m in re.finditer(r"(?<=[.!?:;,\n]) ", text)] + [m.end() for m in re.finditer(r"\n", text)]
    return sorted(set(spots)) or [len(text)]


def half(items: list, split: str) -> list:
    return items[0::2] if split == "A" else items[1::2]


def build(rows: int, seed: int, data: Path) -> list[dict]:
    rng = random.Random(seed)
    contexts = load_contexts(data)
    by_split = {s: [c for c in contexts if c[0] == s] for s in ("A", "B")}
    out = []
    types = list(PII_FORMATS)
    for n in range(rows):
        split = "A" if n % 2 == 0 else "B"
        _, source, text = rng.choice(by_split[split])
        kind = types[n // 2 % len(types)]
        items = []
        # one PII item
        if kind == "phone" and rng.random() < 0.2:
            cue = half(PHONE_CUE_FORMATS, split)
            fmt, carrier, mask = rng.choice(cue)
            value = fill(mask, rng)
        else:
            fmt, gen = rng.choice(half(PII_FORMATS[kind], split))
            carrier = rng.choice(half(CARRIERS[kind], split))
            value = gen(rng)
        items.append({"role": "pii", "type": kind, "format": fmt, "carrier": carrier, "value": value,
                      "core": core_of(value, kind)})
        # one look-alike
        cat, lcarrier, lgen = rng.choice(half(LOOKALIKES, split))
        items.append({"role": "lookalike", "type": cat, "format": lcarrier, "carrier": lcarrier, "value": lgen(rng)})
        out.append(_assemble(f"pii-{n:05d}", split, source, text, items, rng))
    return out


def _assemble(row_id: str, split: str, source: str, text: str, items: list[dict], rng: random.Random) -> dict:
    """Insert each item's carrier phrase at a word boundary of ``text``; record where its value is."""
    rng.shuffle(items)
    spots = sorted(rng.sample(_boundaries(text), 2) if len(_boundaries(text)) >= 2 else [len(text)] * 2)
    pieces, pos, placed = [], 0, []
    cursor = 0
    for spot, item in zip(spots, items):
        pieces.append(text[pos:spot])
        cursor += spot - pos
        phrase = item["carrier"].format(item["value"])
        lead = "" if spot == 0 or text[spot - 1] in " \n" else " "
        pieces.append(lead + phrase + " ")
        start = cursor + len(lead) + phrase.index(item["value"])
        target = item.get("core", item["value"])
        start += item["value"].index(target)
        placed.append({**{k: v for k, v in item.items() if k not in ("carrier", "core")},
                       "value": target, "start": start, "end": start + len(target)})
        cursor += len(lead) + len(phrase) + 1
        pos = spot
    pieces.append(text[pos:])
    full = "".join(pieces)
    for p in placed:
        assert full[p["start"]:p["end"]] == p["value"], (full[p["start"]:p["end"]], p)
    return {"id": row_id, "split": split, "source": source, "text": full, "items": placed}


# ------------------------------------------------------------------------------------------
# split C: a second held-out set, written after the detector's rules were settled on A (and
# B's misses were read): new formats, new carriers, new look-alike kinds, other contexts
# (FLAN CoT rationales, the Claude-rated Alpaca subset, GSM8K *test*). Reported as it comes.
# ------------------------------------------------------------------------------------------

def _email_c(r: random.Random) -> str:
    f, l = r.choice(FIRST), r.choice(LAST)
    local = r.choice([f"{f}.{r.choice(UPPER).lower()}.{l}", str(r.randrange(10**5, 10**10)), f"{f}={l}",
                      f"{l.upper()}", f"{f}_{l}_{r.randrange(10, 99)}", f"{f[0]}.{l}"])
    domain = r.choice(["sub.example.org", "mx.ops-team.example.net", "xn--80ak6aa92e.com", "qq.com", "agency.travel",
                       "studio.photography", "lab.example.ac.uk", "mail.example.co.nz", "EXAMPLE.DE"])
    return f"{local}@{domain}"


EMAIL_FORMATS_C = [
    ("c-varied", _email_c),
    ("c-parens", lambda r: f"({_email_c(r)})"),
    ("c-markdown", lambda r: f"[mail](mailto:{_email_c(r)})"),
    ("c-sentence-end", lambda r: f"{_email_c(r)}."),
]
PHONE_FORMATS_C = [(m, (lambda mm: lambda r: fill(mm, r))(m)) for m in [
    "+32 2 N## ## ##", "+31 6 ########", "+47 22 ## ## ##", "+1 800 N## ####", "(+44) 20 #### ####",
    "+44-20-####-####", "0800 ### ####", "+65 6### ####", "+852 2### ####", "02 #### ####", "+420 601 ### ###",
    "+90 (212) N## ## ##", "+48 22 ### ## ##", "(N##)N##-####", "N## N##-####", "+1 N##.N##.####",
    "0049 89 #######", "+44 7700 ######", "+61 4## ### ###", "1 (800) N##-####", "089 / ## ## ##",
]]
IP_FORMATS_C = [
    ("c-ssh", lambda r: f"root@{_ipv4_host(r)}"),
    ("c-xff", lambda r: f"X-Forwarded-For: {_ipv4_host(r)}"),
    ("c-inet", lambda r: f"inet {_ipv4_host(r)} netmask 255.255.255.0"),
    ("c-ping", lambda r: f"ping {r.choice(['8.8.4.4', '1.0.0.1', '9.9.9.9'])}"),
    ("c-v6-mixed-zeros", lambda r: f"2001:db8:0:0:{r.getrandbits(16):x}::{r.getrandbits(16):x}"),
    ("c-v6-google-like", lambda r: f"2a00:1450:{r.getrandbits(16):x}:{r.getrandbits(12):x}::{r.getrandbits(16):x}"),
    ("c-v6-ula", lambda r: f"fd{r.getrandbits(8):02x}:{r.getrandbits(16):x}:{r.getrandbits(16):x}:1::1"),
    ("c-v6-log", lambda r: f"from {_ipv6_host(r).compressed} port 22"),
]
CARD_FORMATS_C = [
    ("c-maestro", lambda r: (lambda p: group_card(p + luhn_check_digit(p), " "))(
        r.choice(["6759", "6761", "5018"]) + "".join(r.choice(DIGITS) for _ in range(11)))),
    ("c-mir", lambda r: (lambda p: group_card(p + luhn_check_digit(p), " "))(
        "220" + str(r.randrange(5)) + "".join(r.choice(DIGITS) for _ in range(11)))),
    ("c-visa13", lambda r: (lambda p: p + luhn_check_digit(p))("4" + "".join(r.choice(DIGITS) for _ in range(11)))),
    ("c-dots", lambda r: card_number(r, "visa")[1][:4] + "." + "x"),  # replaced below
    ("c-unionpay19", lambda r: (lambda p: group_card(p + luhn_check_digit(p), " "))(
        "62" + "".join(r.choice(DIGITS) for _ in range(16)))),
    ("c-labelled", lambda r: "card no. " + group_card(card_number(r, "mastercard")[1], "-")),
]
CARD_FORMATS_C[3] = ("c-dots", lambda r: ".".join((lambda n: [n[i:i + 4] for i in range(0, 16, 4)])(card_number(r, "visa")[1])))
BBAN_C = {"LI": "5n12c", "MC": "5n5n11c2n", "SM": "1a5n5n12c", "KW": "4a22c", "QA": "4a21c", "JO": "4a4n18c",
          "EE": "2n2n11n1n", "LV": "4a13c", "BG": "4a4n2n8c", "CY": "3n5n16c"}


def iban_c(r: random.Random) -> str:
    c = r.choice(sorted(BBAN_C))
    out = []
    for count, kind in re.findall(r"(\d+)([nac])", BBAN_C[c]):
        alphabet = DIGITS if kind == "n" else UPPER if kind == "a" else UPPER + DIGITS
        out.extend(r.choice(alphabet) for _ in range(int(count)))
    b = "".join(out)
    return c + iban_check_digits(c, b) + b


IBAN_FORMATS_C = [("c-grouped", lambda r: group4(iban_c(r))), ("c-compact", iban_c),
                  ("c-labelled", lambda r: "IBAN " + group4(iban_c(r)))]
SECRET_FORMATS_C = [
    ("c-openai-svcacct", lambda r: "sk-svcacct-" + tok(r, ALNUM + "-_", 80)),
    ("c-github-server", lambda r: "ghs_" + tok(r, ALNUM, 36)),
    ("c-github-fine", lambda r: "github_pat_11" + tok(r, UPPER + DIGITS, 20) + "_" + tok(r, ALNUM, 59)),
    ("c-slack-user", lambda r: f"xoxp-{r.randrange(10**11, 10**12)}-{r.randrange(10**11, 10**12)}-{tok(r, ALNUM, 32)}"),
    ("c-aws-session", lambda r: "ASIA" + "".join(r.choice(UPPER + "234567") for _ in range(16))),
    ("c-stripe-test", lambda r: r.choice(["sk_test_", "rk_live_"]) + tok(r, ALNUM, 32)),
    ("c-jwt-cookie", lambda r: "Cookie: session=" + _jwt(r)),
    ("c-env-aws", lambda r: "AWS_SECRET_ACCESS_KEY=" + tok(r, ALNUM + "/+", 40)),
    ("c-hf-env", lambda r: "HF_TOKEN=hf_" + tok(r, ALNUM, 34)),
]
PII_FORMATS_C = {"email": EMAIL_FORMATS_C, "phone": PHONE_FORMATS_C, "ip": IP_FORMATS_C, "card": CARD_FORMATS_C,
                 "iban": IBAN_FORMATS_C, "secret": SECRET_FORMATS_C}
_STRIP_C = ("root@", "X-Forwarded-For: ", "inet ", "ping ", "from ", "card no. ", "IBAN ", "Cookie: session=",
            "AWS_SECRET_ACCESS_KEY=", "HF_TOKEN=", "[mail](mailto:")


def core_of_c(value: str, kind: str) -> str:
    for p in _STRIP_C:
        if value.startswith(p):
            value = value[len(p):]
    value = value.split(" netmask ")[0].split(" port ")[0]
    if kind == "email":
        value = value.strip("()[].")
        value = value.rstrip(")")
    return value


CARRIERS_C = ["{}", "- {}", "see {} (updated)", "Details: {};", "\"{}\"", "[{}]", "=> {}", "{} <- here"]


def _ean13(r: random.Random) -> str:
    body = [4, 0] + [r.randrange(10) for _ in range(10)]
    c = (10 - sum(d * (1 if i % 2 == 0 else 3) for i, d in enumerate(body)) % 10) % 10
    return "".join(map(str, body)) + str(c)


LOOKALIKES_C = [
    ("c-windows-build", "Windows {}", lambda r: f"10.0.{r.randrange(19041, 26100)}.{r.randrange(1, 5000)}"),
    ("c-ubuntu", "Ubuntu {}", lambda r: f"{r.choice([18, 20, 22, 24])}.04.{r.randrange(1, 7)}"),
    ("c-cve", "{}", lambda r: f"CVE-{r.randrange(1999, 2026)}-{r.randrange(1000, 99999)}"),
    ("c-doi", "doi:{}", lambda r: f"10.{r.randrange(1000, 9999)}/{r.choice(['j', 's', 'nature'])}.{r.randrange(10**5, 10**8)}"),
    ("c-arxiv", "arXiv:{}", lambda r: f"{r.randrange(15, 26)}{r.randrange(1, 13):02d}.{r.randrange(10000, 99999)}"),
    ("c-pmid", "PMID {}", lambda r: str(r.randrange(10**7, 4 * 10**7))),
    ("c-signed", "{}", lambda r: r.choice([f"+{r.uniform(0, 99):.1f}%", f"+/- {r.uniform(0, 1):.2f}", f"+{r.randrange(1, 999)}"])),
    ("c-verse", "John {}", lambda r: f"{r.randrange(1, 21)}:{r.randrange(1, 40)}"),
    ("c-hex", "{}", lambda r: r.choice([f"#{r.getrandbits(24):06X}", f"0x{r.getrandbits(48):012x}"])),
    ("c-epoch", "ts={}", lambda r: str(r.randrange(1_500_000_000, 1_800_000_000) * r.choice([1, 1000]))),
    ("c-upc", "UPC {}", lambda r: "".join(r.choice(DIGITS) for _ in range(12))),
    ("c-ean13-bare", "{}", _ean13),
    ("c-issn", "ISSN {}", lambda r: f"{r.randrange(1000, 9999)}-{r.randrange(1000, 9999)}"),
    ("c-chrome", "Chrome/{}", lambda r: f"{r.randrange(90, 131)}.0.{r.randrange(4000, 6800)}.{r.randrange(0, 250)}"),
    ("c-dotted-date", "{}", lambda r: f"{r.randrange(1990, 2030)}.{r.randrange(1, 13):02d}.{r.randrange(1, 29):02d}"),
    ("c-big-arith", "{}", lambda r: (lambda a, b: f"{a} + {b} = {a + b}")(r.randrange(10**6, 10**8), r.randrange(10**6, 10**8))),
    ("c-thousands", "{}", lambda r: f"{r.randrange(10**6, 10**9):,}"),
    ("c-patent", "US patent {}", lambda r: f"{r.randrange(4, 12)},{r.randrange(100, 999)},{r.randrange(100, 999)}"),
    ("c-ups", "tracking {}", lambda r: "1Z" + "".join(r.choice(UPPER + DIGITS) for _ in range(16))),
    ("c-serial", "serial {}", lambda r: f"SN-{r.randrange(1000, 9999)}-{r.randrange(1000, 9999)}-{r.randrange(1000, 9999)}"),
    ("c-section", "see section {}", lambda r: ".".join(str(r.randrange(1, 12)) for _ in range(4))),
    ("c-gsm8k-calc", "{}", lambda r: (lambda a, b: f"<<{a}*{b}={a * b}>>{a * b}")(r.randrange(10, 5000), r.randrange(2, 500))),
    ("c-ratio", "{}", lambda r: f"{r.randrange(1, 20)}:{r.randrange(1, 20)}:{r.randrange(1, 20)}"),
    ("c-sk-words", "{}", lambda r: r.choice(["sk-learn-compatible-estimators-pipeline", "sk-SE-2024", "desk-123456789012345678",
                                             "task_test_helpers_module_for_the_suite", "AKIA-like"])),
]


def load_contexts_c(data: Path) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name in ("aqua", "creak", "ecqa", "qasc", "strategyqa"):
        with (data / "flan_cot" / f"{name}_train.tsv").open(encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i >= 150:
                    break
                parts = line.rstrip("\n").split("\t")
                if len(parts) >= 3:
                    out.append(("flan:" + name, (parts[0] + "\n" + parts[2]).replace("\\n", "\n")[:1200]))
    alpaca = json.loads((data / "alpaca" / "claude_t45.json").read_text(encoding="utf-8"))
    for row in alpaca[:600]:
        out.append(("alpaca-claude", (row["instruction"] + "\n" + row["output"])[:1200]))
    with (data / "gsm8k" / "test.jsonl").open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= 400:
                break
            row = json.loads(line)
            out.append(("gsm8k-test", row["question"] + "\n" + row["answer"]))
    return out


def build_c(rows: int, seed: int, data: Path) -> list[dict]:
    rng = random.Random(seed)
    contexts = load_contexts_c(data)
    types = list(PII_FORMATS_C)
    out = []
    for n in range(rows):
        source, text = rng.choice(contexts)
        kind = types[n % len(types)]
        fmt, gen = rng.choice(PII_FORMATS_C[kind])
        value = gen(rng)
        pii = {"role": "pii", "type": kind, "format": fmt, "carrier": rng.choice(CARRIERS_C), "value": value,
               "core": core_of_c(value, kind)}
        cat, lcarrier, lgen = rng.choice(LOOKALIKES_C)
        look = {"role": "lookalike", "type": cat, "format": lcarrier, "carrier": lcarrier, "value": lgen(rng)}
        out.append(_assemble(f"pii-c-{n:05d}", "C", source, text, [pii, look], rng))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=6000)
    ap.add_argument("--rows-c", type=int, default=3000, help="rows of the second held-out split C")
    ap.add_argument("--seed", type=int, default=20261206)
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args()
    data = shared_data()
    if not (data / "web" / "pile_1k.jsonl").exists():
        sys.exit(f"shared data not found at {data} (set DATAFORGE_SHARED_DATA)")
    rows = build(args.rows, args.seed, data) + build_c(args.rows_c, args.seed + 1, data)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "planted.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} rows, {sum(len(r['items']) for r in rows)} items -> {path}")


if __name__ == "__main__":
    main()
