"""Step verification on planted slips: ``check_steps`` against a naive ``a op b = c`` regex.

The planted-slip set is built from GSM8K *train* gold solutions (never the test split), seeded
and reproducible:

1. A seeded sample of ``--n`` train solutions. Each is turned into the text a teacher would
   write: GSM8K's calculator annotations ``<<48/2=24>>`` taken out, the final ``#### N`` line
   kept as it is. That text is the **clean** copy.
2. The steps of a solution are found through its annotations: an annotation right after a
   visible ``... =`` whose last numbers are the annotation's operands, in order, and followed
   by the visible result. Only such steps get a slip (so a slip is always planted in a step
   that is really there, and its true value is known from the annotation).
3. For each slip kind, one slipped copy per solution that has a step where the kind applies,
   with exactly one slip in one step (step and change drawn from the seeded generator):

   * ``changed_result`` -- the visible result of a step whose result is used later is changed
     (``48/2 = 25`` while later lines still use 24);
   * ``changed_operand`` -- one operand of a step is changed, its result kept (``46/2 = 24``);
   * ``changed_operand_recomputed`` -- one operand of a step whose result is used later is
     changed and the result recomputed in that line only (``46/2 = 23``; the next line still
     uses 24, which no longer follows);
   * ``wrong_operator`` -- the operator of a two-operand step is replaced (``48*2 = 24``).

   A changed number keeps its format (decimals, thousands separators, ``$``) and moves by a
   delta drawn from +-1, +-2, +-3, +-5, +-10 units of its last digit, or to 2x or 1/2 of it
   (a slip a teacher makes); it stays positive and the step's value must really change. The
   final ``#### N`` is never touched, so every slipped copy still has the gold answer: the
   wrong-step-right-answer case the issue is about.

Both checkers see the same texts (the question too, for our value tracking); a copy is
*caught* when the checker reports any step error. For our checker the table also gives
*located*: an error reported in the slipped line or the line after it. The false-flag rate is
measured on the clean copies; the whole-train flag rate on all 7,473 train solutions as GSM8K
ships them (annotations included, and checked) and as a teacher would write them (stripped).
95% intervals are Wilson score intervals.

    .venv/bin/python benchmarks/bench_steps.py [--n 2000] [--seed 11] [--out results.json]

Needs the shared data (DATAFORGE_SHARED_DATA, default ../shared/data beside the repository);
exits with a message when it is absent.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import sys
import time
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dataforge.generate.steps import check_steps, naive_check_steps  # noqa: E402

KINDS = ("changed_result", "changed_operand", "changed_operand_recomputed", "wrong_operator")
_ANN_RE = re.compile(r"<<([^<>]*)>>")
_VIS_NUM_RE = re.compile(r"(?<![\d.,])(?:\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)")
_CALC_NUM_RE = re.compile(r"\d+(?:\.\d+)?|\.\d+")
_OP_CHARS = {"+": "+", "-": "-", "*": "*", "/": "/", "x": "*", "X": "*", "×": "*", "÷": "/", "–": "-"}


def shared_data() -> Path:
    return Path(os.environ.get("DATAFORGE_SHARED_DATA", REPO.parent / "shared" / "data"))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


# --- a tiny calculator for the annotation expressions (numbers, + - * /, parentheses) ------------

def _calc(expr: str) -> Fraction | None:
    toks = re.findall(r"\d+(?:\.\d+)?|\.\d+|[-+*/()]", expr.replace(" ", ""))
    if "".join(toks) != expr.replace(" ", ""):
        return None
    pos = 0

    def peek():
        return toks[pos] if pos < len(toks) else None

    def take():
        nonlocal pos
        pos += 1
        return toks[pos - 1]

    def expr_():
        v = term()
        while peek() in ("+", "-"):
            v = v + term() if take() == "+" else v - term()
        return v

    def term():
        v = factor()
        while peek() in ("*", "/"):
            op = take()
            w = factor()
            if op == "*":
                v = v * w
            else:
                if w == 0:
                    raise ZeroDivisionError
                v = v / w
        return v

    def factor():
        t = take() if peek() is not None else None
        if t == "-":
            return -factor()
        if t == "(":
            v = expr_()
            if take() != ")":
                raise ValueError
            return v
        if t is None or not (t[0].isdigit() or t[0] == "."):
            raise ValueError
        return Fraction(t)

    try:
        v = expr_()
        return v if pos == len(toks) else None
    except (ValueError, ZeroDivisionError, IndexError):
        return None


# --- steps of a gold solution ------------------------------------------------------------------

class Step:
    """A visible step located through its annotation (offsets into the stripped text)."""

    def __init__(self, operands: list[tuple[int, int]], ops: list[tuple[int, int] | None], result: tuple[int, int],
                 expr: str, value: Fraction, line: tuple[int, int]) -> None:
        self.operands, self.ops, self.result = operands, ops, result
        self.expr, self.value, self.line = expr, value, line


def _num(s: str) -> Fraction:
    return Fraction(s.replace(",", ""))


def strip_and_find_steps(answer: str) -> tuple[str, list[Step]]:
    parts: list[str] = []
    anns: list[tuple[int, str]] = []  # (offset in stripped text, annotation body)
    pos = 0
    out_len = 0
    for m in _ANN_RE.finditer(answer):
        chunk = answer[pos:m.start()]
        parts.append(chunk)
        out_len += len(chunk)
        anns.append((out_len, m.group(1)))
        pos = m.end()
    parts.append(answer[pos:])
    text = "".join(parts)
    steps: list[Step] = []
    for at, body in anns:
        if body.count("=") != 1:
            continue
        expr, res = body.split("=")
        value = _calc(expr)
        if value is None or not re.fullmatch(r"\d+(?:\.\d+)?", res.strip()):
            continue
        calc_nums = _CALC_NUM_RE.findall(expr)
        if len(calc_nums) < 2:
            continue
        rm = _VIS_NUM_RE.match(text, at)
        if rm is None or _num(rm.group()) != Fraction(res.strip()):
            continue
        line_start = text.rfind("\n", 0, at) + 1
        line_end = text.find("\n", at)
        line_end = len(text) if line_end < 0 else line_end
        before = text[line_start:at]
        eq = re.search(r"=\s*\$?\s*$", before)
        if not eq:
            continue
        lhs_end = line_start + eq.start()
        vis = [m for m in _VIS_NUM_RE.finditer(text, line_start, lhs_end)]
        if len(vis) < len(calc_nums):
            continue
        vis = vis[-len(calc_nums):]
        if any(_num(v.group()) != Fraction(c) for v, c in zip(vis, calc_nums)):
            continue
        # the text between the operands must be an operator (and units), nothing else numeric
        ops: list[tuple[int, int] | None] = []
        for a, b in zip(vis, vis[1:]):
            between = text[a.end():b.start()]
            found = [(i, ch) for i, ch in enumerate(between) if ch in "+-*/×÷–" or
                     (ch in "xX" and (i == 0 or not between[i - 1].isalpha()) and
                      (i + 1 == len(between) or not between[i + 1].isalpha()))]
            ops.append((a.end() + found[0][0], a.end() + found[0][0] + 1) if len(found) == 1 else None)
        steps.append(Step([(v.start(), v.end()) for v in vis], ops, (rm.start(), rm.end()), expr, value,
                          (line_start, line_end)))
    return text, steps


# --- planting ----------------------------------------------------------------------------------

def _format_like(original: str, value: Fraction) -> str | None:
    """``value`` written the way ``original`` is (decimals, thousands separators, a leading
    ``.``); None when it needs more decimals than ``original`` has."""
    decimals = len(original.split(".")[1]) if "." in original else 0
    scaled = value * 10 ** decimals
    if scaled.denominator != 1 or value <= 0:
        return None
    n = scaled.numerator
    head, tail = divmod(n, 10 ** decimals)
    head_s = f"{head:,}" if "," in original else str(head)
    out = head_s + (f".{tail:0{decimals}d}" if decimals else "")
    if original.startswith(".") and out.startswith("0."):
        out = out[1:]
    return out


def _new_number(rng: random.Random, original: str) -> str | None:
    v = _num(original)
    decimals = len(original.split(".")[1]) if "." in original else 0
    unit = Fraction(1, 10 ** decimals)
    choices = [v + d * unit for d in (1, -1, 2, -2, 3, -3, 5, -5, 10, -10)] + [v * 2, v / 2]
    rng.shuffle(choices)
    for c in choices:
        if c > 0 and c != v:
            s = _format_like(original, c)
            if s is not None:
                return s
    return None


def _later_use(text: str, step: Step) -> bool:
    """The step's result is written again in a later line before the final ``####`` line (so
    a later step depends on it)."""
    res = text[step.result[0]:step.result[1]]
    final = text.find("####", step.line[1])
    later = text[step.line[1]:final if final >= 0 else len(text)]
    return re.search(rf"(?<![\d.,]){re.escape(res)}(?![\d]|\.\d)", later) is not None


def _value_with(step: Step, operand: int | None = None, new: str | None = None,
                op_index: int | None = None, new_op: str | None = None) -> Fraction | None:
    """The step's value with one operand (by index) or one operator changed, computed from
    its annotation (the calculator's own expression)."""
    pieces = re.split(r"(\d+(?:\.\d+)?|\.\d+)", step.expr)  # text, number, text, number, ..., text
    if operand is not None and new is not None:
        pieces[2 * operand + 1] = new.replace(",", "")
    if op_index is not None and new_op is not None:
        between = pieces[2 * op_index + 2]
        bare = between.replace("(", "").replace(")", "").strip()
        if len(bare) != 1 or bare not in "+-*/":
            return None
        pieces[2 * op_index + 2] = between.replace(bare, new_op)
    return _calc("".join(pieces))


def plant(rng: random.Random, text: str, steps: list[Step], kind: str) -> tuple[str, int] | None:
    """The text with one slip of ``kind`` and the offset of the slipped line, or None."""
    order = list(range(len(steps)))
    rng.shuffle(order)
    for si in order:
        st = steps[si]
        if kind in ("changed_result", "changed_operand_recomputed") and not _later_use(text, st):
            continue
        if kind == "changed_result":
            old = text[st.result[0]:st.result[1]]
            new = _new_number(rng, old)
            if new is None:
                continue
            return text[:st.result[0]] + new + text[st.result[1]:], st.line[0]
        if kind in ("changed_operand", "changed_operand_recomputed"):
            idx = list(range(len(st.operands)))
            rng.shuffle(idx)
            for oi in idx:
                a, b = st.operands[oi]
                old = text[a:b]
                new = _new_number(rng, old)
                if new is None:
                    continue
                value = _value_with(st, oi, new)
                if value is None or value == st.value:
                    continue
                if kind == "changed_operand":
                    return text[:a] + new + text[b:], st.line[0]
                old_res = text[st.result[0]:st.result[1]]
                res_new = _format_like(old_res, value) or _format_like(old_res + ".00" if "." not in old_res
                                                                        else old_res, value)
                if res_new is None or _num(res_new) == _num(old_res):
                    continue
                out = text[:a] + new + text[b:st.result[0]] + res_new + text[st.result[1]:]
                return out, st.line[0]
            continue
        if kind == "wrong_operator":
            if len(st.operands) != 2 or st.ops[0] is None:
                continue
            a, b = st.ops[0]
            old = text[a:b]
            current = _OP_CHARS.get(old)
            if current is None:
                continue
            options = [o for o in "+-*/" if o != current]
            rng.shuffle(options)
            for o in options:
                value = _value_with(st, op_index=0, new_op=o)
                if value is None or value == st.value:
                    continue
                shown = {"*": "x" if old in "xX" else ("×" if old == "×" else "*"), "/": "÷" if old == "÷" else "/",
                         "+": "+", "-": "-"}[o]
                return text[:a] + shown + text[b:], st.line[0]
            continue
    return None


# --- measuring ---------------------------------------------------------------------------------

def located(report, line_start: int, text: str) -> bool:
    end1 = text.find("\n", line_start)
    end2 = text.find("\n", end1 + 1) if end1 >= 0 else -1
    end = len(text) if end2 < 0 else end2
    return any(line_start <= e.start <= end for e in report.errors)


def rate(k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"{k}/{n} = {100 * k / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]" if n else "n/a"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="train solutions sampled for the planted-slip set")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    ap.add_argument("--flagged", type=Path, default=None, help="write the flagged train solutions as JSON lines here")
    args = ap.parse_args()

    path = shared_data() / "gsm8k" / "train.jsonl"
    if not path.exists():
        print(f"GSM8K train not found at {path}: set DATAFORGE_SHARED_DATA to the shared data folder", file=sys.stderr)
        return 2
    rows = [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]
    rng = random.Random(args.seed)
    sample = rng.sample(range(len(rows)), min(args.n, len(rows)))

    cases: list[dict] = []  # {"kind", "row", "text", "line"}
    for ri in sample:
        text, steps = strip_and_find_steps(rows[ri]["answer"])
        cases.append({"kind": "clean", "row": ri, "text": text, "line": -1})
        if not steps:
            continue
        for kind in KINDS:
            planted = plant(random.Random(f"{args.seed}:{ri}:{kind}"), text, steps, kind)
            if planted is not None:
                cases.append({"kind": kind, "row": ri, "text": planted[0], "line": planted[1]})

    t0 = time.perf_counter()
    ours = [check_steps(c["text"], rows[c["row"]]["question"]) for c in cases]
    t_ours = time.perf_counter() - t0
    arith = [check_steps(c["text"], rows[c["row"]]["question"], track_values=False) for c in cases]
    t0 = time.perf_counter()
    naive = [naive_check_steps(c["text"]) for c in cases]
    t_naive = time.perf_counter() - t0

    figures: dict = {"seed": args.seed, "n_solutions": len(sample), "kinds": {}}
    lines = ["| slip kind | copies | ours: caught | ours: located | ours, arithmetic only: caught "
             "| naive regex: caught |",
             "|---|---:|---:|---:|---:|---:|"]
    all_n = all_ours = all_loc = all_naive = all_arith = 0
    for kind in KINDS:
        idx = [i for i, c in enumerate(cases) if c["kind"] == kind]
        n = len(idx)
        k_ours = sum(1 for i in idx if not ours[i].ok)
        k_loc = sum(1 for i in idx if located(ours[i], cases[i]["line"], cases[i]["text"]))
        k_naive = sum(1 for i in idx if not naive[i].ok)
        k_arith = sum(1 for i in idx if not arith[i].ok)
        all_n, all_ours, all_loc = all_n + n, all_ours + k_ours, all_loc + k_loc
        all_naive, all_arith = all_naive + k_naive, all_arith + k_arith
        figures["kinds"][kind] = {"copies": n, "ours_caught": k_ours, "ours_located": k_loc, "naive_caught": k_naive,
                                  "arithmetic_only_caught": k_arith, "ours_ci": wilson(k_ours, n),
                                  "naive_ci": wilson(k_naive, n), "arithmetic_only_ci": wilson(k_arith, n)}
        lines.append(f"| {kind} | {n} | {rate(k_ours, n)} | {rate(k_loc, n)} | {rate(k_arith, n)} | "
                     f"{rate(k_naive, n)} |")
    lines.append(f"| **all slips** | {all_n} | {rate(all_ours, all_n)} | {rate(all_loc, all_n)} | "
                 f"{rate(all_arith, all_n)} | {rate(all_naive, all_n)} |")
    clean = [i for i, c in enumerate(cases) if c["kind"] == "clean"]
    f_ours = sum(1 for i in clean if not ours[i].ok)
    f_naive = sum(1 for i in clean if not naive[i].ok)
    f_arith = sum(1 for i in clean if not arith[i].ok)
    lines.append(f"| clean gold (false flags) | {len(clean)} | {rate(f_ours, len(clean))} | | "
                 f"{rate(f_arith, len(clean))} | {rate(f_naive, len(clean))} |")
    figures["all_slips"] = {"copies": all_n, "ours_caught": all_ours, "ours_located": all_loc,
                            "naive_caught": all_naive, "arithmetic_only_caught": all_arith,
                            "ours_ci": wilson(all_ours, all_n), "naive_ci": wilson(all_naive, all_n),
                            "arithmetic_only_ci": wilson(all_arith, all_n)}
    figures["clean"] = {"copies": len(clean), "ours_flagged": f_ours, "naive_flagged": f_naive,
                        "arithmetic_only_flagged": f_arith, "ours_ci": wilson(f_ours, len(clean)),
                        "naive_ci": wilson(f_naive, len(clean)), "arithmetic_only_ci": wilson(f_arith, len(clean))}
    figures["planted_set_seconds"] = {"ours": t_ours, "naive": t_naive, "rationales": len(cases)}

    # a checker that flags the clean copy "catches" its slipped copies for free: the catch rate
    # among the copies whose clean version the checker passes
    clean_flag = {(c["row"], "ours"): not ours[i].ok for i, c in enumerate(cases) if c["kind"] == "clean"}
    clean_flag.update({(c["row"], "naive"): not naive[i].ok for i, c in enumerate(cases) if c["kind"] == "clean"})
    cond_lines = ["| slip kind | ours: caught, clean copy passed | naive regex: caught, clean copy passed |",
                  "|---|---:|---:|"]
    figures["conditional"] = {}
    for kind in (*KINDS, "all"):
        idx = [i for i, c in enumerate(cases) if c["kind"] != "clean" and (kind == "all" or c["kind"] == kind)]
        row_out = []
        for name, reps in (("ours", ours), ("naive", naive)):
            sub = [i for i in idx if not clean_flag[(cases[i]["row"], name)]]
            k = sum(1 for i in sub if not reps[i].ok)
            figures["conditional"].setdefault(kind, {})[name] = {"copies": len(sub), "caught": k,
                                                                 "ci": wilson(k, len(sub))}
            row_out.append(rate(k, len(sub)))
        cond_lines.append(f"| {'**all slips**' if kind == 'all' else kind} | {row_out[0]} | {row_out[1]} |")

    # the whole train set, as shipped (annotations checked) and as a teacher writes it
    whole: dict = {}
    flagged_rows: list[dict] = []
    for label, texts in (("as_shipped", [r["answer"] for r in rows]),
                         ("annotations_stripped", [strip_and_find_steps(r["answer"])[0] for r in rows])):
        t0, c0 = time.perf_counter(), time.process_time()
        reps = [check_steps(t, r["question"]) for t, r in zip(texts, rows)]
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        t0 = time.perf_counter()
        nreps = [naive_check_steps(t) for t in texts]
        nsecs = time.perf_counter() - t0
        k = sum(1 for r in reps if not r.ok)
        kn = sum(1 for r in nreps if not r.ok)
        whole[label] = {"rows": len(rows), "ours_flagged": k, "ours_ci": wilson(k, len(rows)), "ours_seconds": secs,
                        "ours_rows_per_s": len(rows) / secs, "ours_cpu_seconds": cpu,
                        "ours_rows_per_cpu_s": len(rows) / cpu, "naive_flagged": kn, "naive_ci": wilson(kn, len(rows)),
                        "naive_rows_per_s": len(rows) / nsecs,
                        "steps_checked": sum(r.steps_checked for r in reps),
                        "values_checked": sum(r.values_checked for r in reps)}
        if label == "as_shipped":
            for i, r in enumerate(reps):
                if not r.ok:
                    flagged_rows.append({"row": i + 1, "errors": [e.describe() for e in r.errors]})
    figures["whole_train"] = whole

    print(f"Planted slips on {len(sample)} GSM8K train solutions (seed {args.seed}); "
          f"{len(cases)} rationales checked\n")
    print("\n".join(lines))
    print()
    print("\n".join(cond_lines))
    print("\n| whole train (7,473) | ours flagged | naive flagged | ours rows/s (wall) | ours rows/s (CPU) | "
          "steps checked | operands traced |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, w in whole.items():
        print(f"| {label} | {rate(w['ours_flagged'], w['rows'])} | {rate(w['naive_flagged'], w['rows'])} | "
              f"{w['ours_rows_per_s']:.0f} | {w['ours_rows_per_cpu_s']:.0f} | {w['steps_checked']} | "
              f"{w['values_checked']} |")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))
    if args.flagged:
        with args.flagged.open("w") as f:
            for r in flagged_rows:
                f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
