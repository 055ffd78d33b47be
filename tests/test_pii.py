"""The ``pii`` stage (dataforge/stages/pii.py): every type in several formats, the look-alikes
that must stay, the checksums, placeholders and count columns, every text column, drop mode,
the bulk path against the reference path, config errors, the registry and the command."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pydantic import ValidationError

from dataforge.records import make_sample, samples_to_table
from dataforge.stages.pii import (COUNT_COLUMNS, PII_TYPES, PREFILTERS, STAGE, PiiConfig, apply_pii, card_brand,
                                  find_pii, iban_valid, luhn_valid, redact_table, redact_text, report)

ON = PiiConfig(enabled=True)


def found(text: str) -> list[tuple[str, str]]:
    return [(text[s:e], t) for s, e, t in find_pii(text)]


# ------------------------------------------------------------------------------------------
# each type, several formats
# ------------------------------------------------------------------------------------------

CAUGHT = {
    "email": ["john.doe@example.com", "jane+news@mail.example.co.uk", "Maria_Garcia.1987@uni-heidelberg.de",
              "X.Y@EXAMPLE.ORG", "bounce=jane@lists.example.net", "ops@xn--80ak6aa92e.com"],
    "phone": ["+44 20 7946 0958", "+1-202-555-0173", "+33 (0)1 23 45 67 89", "+442079460958", "+49 30 12345678",
              "+81-3-1234-5678", "+1 (202) 555-0173", "(+44) 20 7946 0958", "0044 20 7946 0958",
              "(555) 123-4567", "555-123-4567", "555.123.4567", "555 123 4567", "555 123-4567", "1-800-555-0199",
              "(020) 7946 0958", "020 7946 0958", "06 12 34 56 78", "06-12345678", "030/1234567", "07700 900123",
              "01.23.45.67.89", "089 / 12 34 56"],
    "ip": ["192.168.1.20", "203.0.113.77", "dns|8.8.8.8", "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
           "2001:db8::8a2e:370:7334", "fe80::1ff:fe23:4567:890a%eth0", "::ffff:192.0.2.128", "2A00:1450:4001:81C::200E"],
    "card": ["4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111", "5500 0000 0000 0004",
             "3782 822463 10005", "6011 1111 1111 1117", "3530 1113 3330 0000", "4111.1111.1111.1111",
             "5105105105105100"],
    "iban": ["DE89 3704 0044 0532 0130 00", "DE89370400440532013000", "GB82 WEST 1234 5698 7654 32",
             "FR14 2004 1010 0505 0001 3M02 606", "NL91ABNA0417164300", "BE68 5390 0754 7034", "CH93 0076 2011 6238 5295 7"],
    "secret": ["sk-" + "Ab1" * 16, "sk-proj-" + "Xy9_-" * 20, "AKIAIOSFODNN7EXAMPLE", "ghp_" + "a1B2" * 9,
               "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "AIza" + "Sy1_-" * 7,
               "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", "hf_" + "aB3" * 11 + "x",
               "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"],
}


@pytest.mark.parametrize("kind,value", [(k, v) for k, vs in CAUGHT.items() for v in vs])
def test_each_type_is_caught_in_context(kind: str, value: str) -> None:
    cue, _, core = value.rpartition("|")  # "dns|8.8.8.8": a cue word, then the value
    text = f"For details, see {cue} {core} today."
    out, counts = redact_text(text)
    assert core not in out, out
    assert counts[kind] == 1, (out, counts)
    assert sum(counts.values()) == 1
    assert f"<{ {'ip': 'IP_ADDRESS', 'card': 'CARD_NUMBER'}.get(kind, kind.upper()) }>" in out


def test_phone_after_a_cue_may_be_a_bare_run() -> None:
    for text in ("Tel: 07700900123", "call 555-0199 now", "Phone number: 5551234567", "Fax: 020 7946 0958",
                 "WhatsApp +4915112345678"):
        assert [t for _, t in found(text)] == ["phone"], text
    assert found("the run 5551234567 has no cue") == []


def test_secret_assignment_and_private_key_block() -> None:
    text = 'aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"\n'
    out, counts = redact_text(text)
    assert out == 'aws_secret_access_key = "<SECRET>"\n' and counts["secret"] == 1
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1234\nabcd+/==\n-----END RSA PRIVATE KEY-----"
    out, counts = redact_text(f"key:\n{pem}\ndone")
    assert out == "key:\n<SECRET>\ndone" and counts["secret"] == 1


# ------------------------------------------------------------------------------------------
# look-alikes stay
# ------------------------------------------------------------------------------------------

KEPT = [
    # versions
    "Python 3.11.7", "v2.10.1", "1.2.3", "version 4.2.1.0", "10.0.19041.1", "1.2.3.4", "section 3.2.1.4",
    "release 12.3.45.200 notes", "2.13.5.17", "Chrome/120.0.6099.109", "1.2.3-beta.4", "OID 1.3.6.1.4.1.311",
    # dates, times
    "2024-03-15", "15.03.2024", "03/15/2024", "15.03.2024 10:30", "2024-03-15T12:30:45Z", "12:30:45", "20240315",
    "1998-2004", "2024.03.15",
    # ISBNs
    "ISBN 978-3-16-148410-0", "ISBN 0-306-40615-2", "ISBN 0 306 40615 2", "9780306406157", "ISBN-13: 978-0-306-40615-7",
    # arithmetic and numbers
    "12 + 34 = 46", "3.14159", "1,234,567", "$5,000.00", "<<48/2=24>>24", "12*4=48", "1234567 + 7654321 = 8888888",
    "(12 + 8) x 3 = 60", "016.146.301", "90210-1234", "40.7128, -74.0060", "+5.2%", "+12.345678",
    # card- and IBAN-like that fail their checksum, identifiers
    "4111 1111 1111 1112", "4111111111111112", "DE89 3704 0044 0532 0130 01", "GB82WEST12345698765433",
    "order #4532015112830366", "tracking number 4532015112830366", "EAN 4006381333931", "4006381333931",
    "1234 5678 9012 3456 7890", "ID 5105105105105100",
    # IPv6 and e-mail look-alikes, reserved addresses
    "std::vector<int>", "a::C", "Foo::Bar::baz", "00:1A:2B:3C:4D:5E", "de:ad:be:ef:00:11:22:33", "127.0.0.1",
    "0.0.0.0", "::1", "255.255.255.0", "224.1.1.1", "256.1.1.1", "icon@2x.png", "@username", "user@localhost",
    "pkg@1.2.3", "@media screen",
    # secret look-alikes
    "sk-learn", "task-force", "sk-learn-compatible-estimators-pipeline", "AKIA", "ghp_", "hf_hub_download",
    "e83c5163316f89bfbde7d9ab23ca2e25604af290", "123e4567-e89b-12d3-a456-426614174000", "YOUR_API_KEY",
]


@pytest.mark.parametrize("value", KEPT)
def test_each_look_alike_is_kept(value: str) -> None:
    text = f"As noted, {value} stays here."
    out, counts = redact_text(text)
    assert out == text, found(text)
    assert sum(counts.values()) == 0


def test_gsm8k_style_math_is_untouched() -> None:
    text = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72\n"
            "The bill was $1,234.56 and 15% of 2,400 is 360; 3 x 4 = 12; 0.25 * 1600 = 400.")
    assert redact_text(text)[0] == text


# ------------------------------------------------------------------------------------------
# checksums
# ------------------------------------------------------------------------------------------

def test_luhn() -> None:
    for good in ("4111111111111111", "5500000000000004", "378282246310005", "6011111111111117", "79927398713"):
        assert luhn_valid(good), good
    for bad in ("4111111111111112", "5500000000000005", "79927398710"):
        assert not luhn_valid(bad), bad


def test_card_brand_needs_prefix_and_length() -> None:
    assert card_brand("4111111111111111") == "visa"
    assert card_brand("378282246310005") == "amex"
    assert card_brand("3782822463100051") is None  # Amex is 15 digits
    assert card_brand("5500000000000004") == "mastercard"
    assert card_brand("9111111111111111") is None  # no brand starts with 9
    assert card_brand("41111") is None


def test_iban_mod97_and_country_length() -> None:
    for good in ("DE89370400440532013000", "GB82WEST12345698765432", "FR1420041010050500013M02606",
                 "NL91ABNA0417164300", "BE68539007547034", "CH9300762011623852957", "NO9386011117947"):
        assert iban_valid(good), good
    assert not iban_valid("DE89370400440532013001")  # checksum
    assert not iban_valid("DE8937040044053201300")  # one short for DE
    assert not iban_valid("XX89370400440532013000")  # no such country
    assert not iban_valid("de89370400440532013000")


def test_card_failing_luhn_is_not_taken_as_a_phone_either() -> None:
    for text in ("card 4111 1111 1111 1112", "IBAN NL17 DVZE 0526 9142 73", "code 1234-5678-9012-3457"):
        assert found(text) == [], text


# ------------------------------------------------------------------------------------------
# the stage on tables
# ------------------------------------------------------------------------------------------

def sample_table() -> pa.Table:
    rows = [
        make_sample("document", "Mail me at jane@example.org or call +1-202-555-0173."),
        make_sample("document", "Nothing personal here: version 1.2.3, 2024-03-15, 12 + 34 = 46."),
        make_sample("instruction", "Summarise the request.",
                    messages=[{"role": "user", "content": "My card is 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00"},
                              {"role": "assistant", "content": "Never share 4111 1111 1111 1111 (or jane@example.org)."}]),
        make_sample("cot", "Q and A", question="Server 203.0.113.9 is down; ping it?",
                    rationale="The host 203.0.113.9 answered; the key sk-" + "Ab1" * 16 + " leaked.", answer="none"),
    ]
    return samples_to_table(rows)


def test_redact_mode_placeholders_and_count_columns() -> None:
    table = sample_table()
    kept, rejected = apply_pii(table, ON)
    assert rejected.num_rows == 0 and kept.num_rows == 4
    assert kept.column("id").to_pylist() == table.column("id").to_pylist()  # ids are kept
    for col in COUNT_COLUMNS.values():
        assert kept.schema.field(col).type == pa.int32()
        assert kept.column(col).null_count == 0
    assert kept.column("text")[0].as_py() == "Mail me at <EMAIL> or call <PHONE>."
    assert kept.column("text")[1].as_py() == table.column("text")[1].as_py()
    counts = {t: kept.column(c).to_pylist() for t, c in COUNT_COLUMNS.items()}
    assert counts["email"] == [1, 0, 1, 0]
    assert counts["phone"] == [1, 0, 0, 0]
    assert counts["card"] == [0, 0, 2, 0]
    assert counts["iban"] == [0, 0, 1, 0]
    assert counts["ip"] == [0, 0, 0, 2]
    assert counts["secret"] == [0, 0, 0, 1]
    assert "pii_email" in STAGE.columns and rejected.column_names[-2:] == ["drop_stage", "drop_reason"]


def test_messages_and_question_columns_are_redacted() -> None:
    kept, _ = apply_pii(sample_table(), ON)
    messages = kept.column("messages")[2].as_py()
    assert messages[0] == {"role": "user", "content": "My card is <CARD_NUMBER>, IBAN <IBAN>"}
    assert messages[1] == {"role": "assistant", "content": "Never share <CARD_NUMBER> (or <EMAIL>)."}
    row = kept.slice(3, 1).to_pylist()[0]
    assert row["question"] == "Server <IP_ADDRESS> is down; ping it?"
    assert row["rationale"] == "The host <IP_ADDRESS> answered; the key <SECRET> leaked."
    assert row["answer"] == "none"
    assert kept.schema == apply_pii(sample_table(), ON)[0].schema
    assert kept.schema.field("messages").type == sample_table().schema.field("messages").type


def test_custom_placeholders_types_and_columns() -> None:
    cfg = PiiConfig(enabled=True, types=["email"], placeholders={"email": "[redacted email]"}, text_columns=["text"])
    kept, _ = apply_pii(sample_table(), cfg)
    assert kept.column("text")[0].as_py() == "Mail me at [redacted email] or call +1-202-555-0173."
    assert kept.column("pii_email").to_pylist() == [1, 0, 0, 0]  # messages not in text_columns
    assert kept.column("pii_phone").null_count == 4  # not searched: null, not 0
    assert "jane@example.org" in kept.column("messages")[2].as_py()[1]["content"]


def test_drop_mode_rejects_redacted_rows_with_reasons() -> None:
    cfg = PiiConfig(enabled=True, action="drop")
    kept, rejected = apply_pii(sample_table(), cfg)
    assert kept.num_rows == 1 and rejected.num_rows == 3
    assert kept.column("pii_email").to_pylist() == [0]
    assert rejected.column("drop_stage").to_pylist() == ["pii"] * 3
    assert rejected.column("drop_reason").to_pylist() == ["pii:email,phone", "pii:email,card,iban", "pii:ip,secret"]
    flat = json.dumps(rejected.drop_columns(["created_at"]).to_pylist())
    for leaked in ("jane@example.org", "555-0173", "4111 1111", "DE89", "203.0.113.9", "Ab1Ab1"):
        assert leaked not in flat, leaked
    assert rejected.column("pii_card").to_pylist() == [0, 2, 0]
    assert report(kept, rejected) == ["pii: 3 of 4 rows held PII; email 2, phone 1, ip 2, card 2, iban 1, secret 1",
                                      "pii: 3 rows dropped (redacted in rejected.parquet)"]


def test_disabled_stage_changes_nothing_and_rerun_is_stable() -> None:
    table = sample_table()
    kept, rejected = apply_pii(table, PiiConfig())
    assert kept.equals(table) and rejected.num_rows == 0
    once, _ = apply_pii(table, ON)
    twice, _ = apply_pii(once, ON)
    assert twice.column_names == once.column_names  # its own columns replaced, not duplicated
    assert twice.column("text").equals(once.column("text"))
    assert sum(pc.sum(twice.column(c)).as_py() for c in COUNT_COLUMNS.values()) == 0


def test_empty_table() -> None:
    empty = samples_to_table([])
    for action in ("redact", "drop"):
        kept, rejected = apply_pii(empty, PiiConfig(enabled=True, action=action))
        assert kept.num_rows == 0 and rejected.num_rows == 0
        assert set(COUNT_COLUMNS.values()) <= set(kept.column_names)
        assert {"drop_stage", "drop_reason"} <= set(rejected.column_names)


def test_a_table_of_only_text_and_id() -> None:
    table = pa.table({"id": ["a", "b", "c"], "text": ["x@example.com", None, "plain"]})
    kept, _ = apply_pii(table, ON)
    assert kept.column("text").to_pylist() == ["<EMAIL>", None, "plain"]
    assert kept.column("pii_email").to_pylist() == [1, 0, 0]


# ------------------------------------------------------------------------------------------
# bulk path == reference path; prefilters are necessary conditions
# ------------------------------------------------------------------------------------------

PIECES = [
    "a", "Tel: ", "call ", "+", "(", ")", " ", "-", ".", "/", ":", "::", "@", "x", "com", "example.org", "ver ",
    "version ", "0", "00", "1", "4", "44", "555", "123", "4567", "2024", "192", "168", "255", "ffff", "db8", "2001",
    "DE89", "3704", "0044", "0532", "0130", "00 ", "GB82", "WEST", "sk-", "Ab12Cd34Ef56Gh78Ij90Kl", "AKIA",
    "IOSFODNN7EXAMPLE", "ghp_", "4111", "1111", "\n", "ISBN ", "order #", "=", "_", "%", "é", "٣", "ip ",
]


def random_texts(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randrange(1, 40))) for _ in range(n)]


def varied_texts() -> list[str]:
    texts = [f"x {v} y" for vs in CAUGHT.values() for v in vs] + [f"x {v} y" for v in KEPT]
    return texts + random_texts(3000) + ["", "   ", "no digits at all"]


def test_bulk_equals_reference_on_a_varied_set() -> None:
    texts = varied_texts()
    table = pa.table({"id": [str(i) for i in range(len(texts))], "text": texts})
    bulk, _ = apply_pii(table, ON)
    ref, _ = apply_pii(table, ON, bulk=False)
    assert bulk.equals(ref)
    assert sum(pc.sum(bulk.column(c)).as_py() for c in COUNT_COLUMNS.values()) > 100


def test_every_finding_matches_its_prefilter() -> None:
    texts = varied_texts()
    for t in PII_TYPES:
        hits = [text for text in texts if any(k == t for _, _, k in find_pii(text, [t]))]
        assert hits, t
        matched = pc.match_substring_regex(pa.array(hits), PREFILTERS[t]).to_pylist()
        assert all(matched), [h for h, m in zip(hits, matched) if not m][:3]


def test_bulk_equals_reference_on_lists_chunks_slices_and_large_strings() -> None:
    texts = random_texts(400, seed=11)
    messages = [None if i % 7 == 0 else [{"role": "user", "content": texts[i]},
                                          {"role": "assistant", "content": None if i % 5 == 0 else texts[-i]}]
                for i in range(len(texts))]
    table = pa.table({
        "id": [str(i) for i in range(len(texts))],
        "text": pa.array(texts, pa.large_string()),
        "messages": messages,
        "question": [None if i % 3 else t for i, t in enumerate(texts)],
        "tags": [[t, "x@y.com"] for t in texts],
    })
    chunked = pa.concat_tables([table.slice(0, 150), table.slice(150, 100), table.slice(250)])
    cfg = PiiConfig(enabled=True, text_columns=["text", "messages", "question", "tags"])
    for t in (table, chunked, chunked.slice(37, 300)):
        bulk, _ = apply_pii(t, cfg)
        ref, _ = apply_pii(t, cfg, bulk=False)
        assert bulk.to_pylist() == ref.to_pylist()
        assert bulk.schema.field("text").type == pa.large_string()
        assert bulk.column("pii_email").to_pylist() == [
            sum(c["email"] for c in [redact_text(v)[1] for v in _values(row)]) for row in t.to_pylist()]


def _values(row: dict) -> list[str]:
    out = [row["text"], row["question"], *(row["tags"] or [])]
    out += [m["content"] for m in row["messages"] or []]
    return [v for v in out if v is not None]


def test_bulk_equals_reference_on_the_pile(pile_docs: list[dict]) -> None:
    texts = [d["contents"] for d in pile_docs]
    table = pa.table({"id": [str(i) for i in range(len(texts))], "text": texts})
    table, ref_counts = redact_table(table, ON, bulk=False)
    bulk_table, bulk_counts = redact_table(pa.table({"id": [str(i) for i in range(len(texts))], "text": texts}), ON)
    assert bulk_table.equals(table)
    assert (bulk_counts == ref_counts).all()
    assert bulk_counts.sum() > 0  # the Pile sample holds real e-mail addresses and phone numbers


# ------------------------------------------------------------------------------------------
# config, registry, command
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,field", [
    ({"action": "delete"}, "action"),
    ({"types": []}, "types"),
    ({"types": ["ssn"]}, "types"),
    ({"placeholders": {"email": "  "}}, "placeholders"),
    ({"placeholders": {"passport": "<P>"}}, "placeholders"),
    ({"text_columns": ["messages"]}, "text_columns"),
    ({"keep_reserved_ips": "sometimes"}, "keep_reserved_ips"),
    ({"colour": "red"}, "colour"),
])
def test_config_errors_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        PiiConfig(**kwargs)
    assert field in str(err.value)


def test_config_defaults() -> None:
    cfg = PiiConfig()
    assert cfg.enabled is False and cfg.action == "redact" and cfg.types == list(PII_TYPES)
    assert PiiConfig(types=["secret", "email", "email"]).types == ["email", "secret"]


def test_the_declaration_is_registered() -> None:
    from dataforge.stages.registry import get_stage

    stage = get_stage("pii")
    assert stage is STAGE
    assert stage.config_model is PiiConfig and stage.kind == "curation" and stage.scope == "shard"
    assert stage.columns == tuple(COUNT_COLUMNS.values()) and stage.report is report
    kept, _ = stage.apply(sample_table(), SimpleNamespace(pii=PiiConfig(enabled=True)))
    assert kept.column("pii_email").to_pylist() == [1, 0, 1, 0]
    assert {o.flag for o in stage.cli_options} == {"action", "types", "columns"}
    assert stage.cli_options[1].parse("email, phone") == ["email", "phone"]


def test_standalone_command_redacts_every_row(tmp_path) -> None:
    from typer.testing import CliRunner

    from dataforge.cli import app

    rows = [{"id": f"r{i}", "text": text} for i, text in enumerate([
        "Contact jane.doe@example.com or +44 20 7946 0958.",
        "Nothing here but version 1.2.3 and 2024-03-15.",
        "Card 4111 1111 1111 1111, server 203.0.113.9, IBAN DE89 3704 0044 0532 0130 00.",
        "token ghp_" + "a1B2" * 9,
    ])]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["pii", str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    import pyarrow.parquet as pq

    kept = pq.read_table(out / "kept.parquet")
    assert pq.read_table(out / "rejected.parquet").num_rows == 0
    assert kept.column("id").to_pylist() == [r["id"] for r in rows]
    assert kept.column("text").to_pylist() == [
        "Contact <EMAIL> or <PHONE>.",
        "Nothing here but version 1.2.3 and 2024-03-15.",
        "Card <CARD_NUMBER>, server <IP_ADDRESS>, IBAN <IBAN>.",
        "token <SECRET>",
    ]
    assert "pii: 3 of 4 rows held PII" in result.output
