"""A second held-out check of the pii stage, written apart from the stage and its benchmark
(benchmarks/pii_data.py) after both were finished: its own generators, formats, carriers and
look-alikes, planted into GSM8K test questions (the shared data; DATAFORGE_SHARED_DATA, default
../shared/data). Prints removal per type and the share of look-alikes left intact.

    .venv/bin/python benchmarks/pii_holdout.py

Its generator is deliberately naive in places (JCB numbers are drawn from 3500-3599, wider than
the real 3528-3589 range), so a "miss" there is the generator's, not the stage's.
"""
import json
import os
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dataforge.stages.pii import find_pii  # noqa: E402

R = random.Random(777)
def luhn_digit(body):
    s = 0
    for i, d in enumerate(reversed(body)):
        d = int(d)
        if i % 2 == 0:
            d *= 2
            if d > 9: d -= 9
        s += d
    return str((10 - s % 10) % 10)
def card():
    pre, n = R.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15), ("6011", 16), ("35", 16)])
    body = pre + "".join(R.choice("0123456789") for _ in range(n - len(pre) - 1))
    num = body + luhn_digit(body)
    sep = R.choice(["", " ", "-"])
    if n == 16: return sep.join(num[i:i+4] for i in range(0, 16, 4))
    return sep.join([num[:4], num[4:10], num[10:]])
def bad_card():
    c = card(); d = re.sub(r"\D", "", c)
    last = str((int(d[-1]) + R.randint(1, 9)) % 10)
    return c[:-1] + last
def iban():
    country, bban_len = R.choice([("DE", 18), ("FR", 23), ("GB", 18), ("ES", 20), ("NL", 14), ("IT", 23), ("BE", 12), ("PL", 24), ("CH", 17), ("AT", 16)])
    if country == "GB" or country == "NL":
        bban = "".join(R.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4)) + "".join(R.choice("0123456789") for _ in range(bban_len - 4))
    elif country == "IT":
        bban = R.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") + "".join(R.choice("0123456789") for _ in range(bban_len - 1))
    else:
        bban = "".join(R.choice("0123456789") for _ in range(bban_len))
    rearr = bban + country + "00"
    num = int("".join(str(int(c, 36)) for c in rearr))
    check = 98 - num % 97
    s = f"{country}{check:02d}{bban}"
    return " ".join(s[i:i+4] for i in range(0, len(s), 4)) if R.random() < 0.5 else s
def bad_iban():
    s = iban(); i = R.randrange(4, len(s))
    while not s[i].isdigit(): i = R.randrange(4, len(s))
    return s[:i] + str((int(s[i]) + 1) % 10) + s[i+1:]
def email():
    user = R.choice(["j.smith", "maria_gonzalez", "dev+alerts", "k.o'neil".replace("'", ""), "info", "a.b.c", "support-team", "x9"])
    dom = R.choice(["example.org", "mail.uni-bonn.de", "corp.co.uk", "gmail.com", "stats.gov.au", "shop.example.io"])
    return f"{user}{R.randint(1,99)}@{dom}"
def phone():
    f = R.choice(["+1 (415) 555-{a}", "+49 30 {b} {c}", "+33 1 42 {d} {e} {f}", "(212) 555-{a}", "+44 161 496 {a}", "+61 2 9374 {a}", "+81 3-5555-{a}", "0161 496 {a}", "+34 912 345 {g}", "+91 98765 {h}"])
    return f.format(a=f"{R.randint(0,9999):04d}", b=f"{R.randint(100,999)}", c=f"{R.randint(1000,9999)}", d=f"{R.randint(10,99)}", e=f"{R.randint(10,99)}", f=f"{R.randint(10,99)}", g=f"{R.randint(100,999)}", h=f"{R.randint(10000,99999)}")
def ip():
    if R.random() < 0.5:
        return ".".join(str(R.randint(1, 223)) for _ in range(4))
    return ":".join(f"{R.randint(0, 65535):x}" for _ in range(8)) if R.random() < 0.5 else f"2001:db8:{R.randint(0,65535):x}::{R.randint(1,65535):x}"
def secret():
    A = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return R.choice([lambda: "sk-" + "".join(R.choice(A) for _ in range(48)),
                     lambda: "AKIA" + "".join(R.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16)),
                     lambda: "ghp_" + "".join(R.choice(A) for _ in range(36)),
                     lambda: "xoxb-" + "-".join("".join(R.choice("0123456789") for _ in range(12)) for _ in range(2)) + "-" + "".join(R.choice(A) for _ in range(24))])()
def lookalike():
    return R.choice([
        lambda: f"version {R.randint(1,9)}.{R.randint(0,20)}.{R.randint(0,30)}",
        lambda: f"on {R.randint(2000,2030)}-{R.randint(1,12):02d}-{R.randint(1,28):02d}",
        lambda: f"{R.randint(1,12)}/{R.randint(1,28)}/{R.randint(1990,2030)}",
        lambda: f"at {R.randint(0,23):02d}:{R.randint(0,59):02d}:{R.randint(0,59):02d}",
        lambda: f"{R.randint(100,999)} * {R.randint(10,99)} = " + str(R.randint(1000, 99999)),
        lambda: f"order no. {R.randint(10**9, 10**10)}",
        lambda: f"ISBN 978-{R.randint(0,1)}-{R.randint(100,999)}-{R.randint(10000,99999)}-{R.randint(0,9)}",
        lambda: f"pi is about 3.{R.randint(10**6, 10**7)}",
        lambda: bad_card(), lambda: bad_iban(),
        lambda: f"Python {R.randint(2,3)}.{R.randint(0,13)}.{R.randint(0,20)}",
        lambda: f"population {R.randint(1,999)},{R.randint(0,999):03d},{R.randint(0,999):03d}",
        lambda: f"ZIP {R.randint(10000, 99999)}-{R.randint(1000,9999)}",
    ])()
gens = {"email": email, "phone": phone, "ip": ip, "card": card, "iban": iban, "secret": secret}
carriers = ["Please write to {} for details.", "You can reach me at {} after 5pm.", "Our records show {} on file.",
            "Contact: {}", "The value {} appears in the log.", "Send payment using {} by Friday."]
SHARED = Path(os.environ.get("DATAFORGE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
ctx = [json.loads(line)["question"] for line in open(SHARED / "gsm8k" / "test.jsonl")][:400]
res = {k: [0, 0] for k in gens}; la = [0, 0]; misses = []; fps = []
for i in range(1200):
    kind = list(gens)[i % 6]; v = gens[kind](); l = lookalike()
    c = R.choice(carriers)
    if kind == "card": c = R.choice(["Card number {} was charged.", "Pay with {}.", "The number {} is on the invoice."])
    if kind == "iban": c = R.choice(["Transfer to {} please.", "Account: {}", "IBAN {} (checking)."])
    text = ctx[i % len(ctx)] + " " + c.format(v) + " Note: " + l + " was recorded."
    spans = find_pii(text)
    vs = text.index(v); ve = vs + len(v)
    covered = all(any(s <= j < e for s, e, _ in spans) for j in range(vs, ve) if text[j].isalnum())
    res[kind][0] += covered; res[kind][1] += 1
    if not covered: misses.append((kind, v))
    ls = text.index(l, ve) if l in text[ve:] else text.rindex(l); le = ls + len(l)
    intact = not any(s < le and e > ls for s, e, _ in spans)
    la[0] += intact; la[1] += 1
    if not intact: fps.append(l)
tot = sum(a for a, b in res.values()); n = sum(b for a, b in res.values())
print({k: f"{a}/{b} {a/b:.1%}" for k, (a, b) in res.items()}, f"all {tot}/{n} {tot/n:.1%}", f"lookalikes intact {la[0]}/{la[1]} {la[0]/la[1]:.1%}")
print("misses", misses[:15]); print("fps", fps[:15])
