"""``dataforge classifier train | label`` and ``dataforge classify``: fastText quality
classifiers from the command line (library: :mod:`dataforge.curate.classifier`,
:mod:`dataforge.curate.rubric`, :mod:`dataforge.curate.quality`)."""

from __future__ import annotations

import asyncio
import math
import shutil
from pathlib import Path

import typer

from dataforge.cli import common
from dataforge.cli.common import fail

classifier_app = typer.Typer(
    help="fastText quality classifiers: train one from positive and negative sources, labelled rows or a recipe "
         "(classifiers/recipes/*.yaml), or have the teacher rate a sample on a rubric first (label). "
         "Score files with `dataforge classify`.",
    no_args_is_help=True)

DATA_ROOT_HELP = "Data root; models go to <data root>/models/<name>/ [env DATAFORGE_DATA_ROOT; default: ./dataforge-data]"
SOURCE_HELP = ("A source: FILE[:COLUMN[+COLUMN]][?FIELD=V1,V2&in=FILE&not_in=FILE&limit=N], e.g. "
               "'pile_1k.jsonl:contents?metadata.pile_set_name=Wikipedia (en),USPTO Backgrounds'. Repeatable.")


def _params(base, **overrides):
    from dataforge.curate.classifier import TrainParams

    return common.section(TrainParams, base.model_dump(), overrides, "params")


def _summary(card: dict, out: Path) -> str:
    held = card["metrics"]["held_out"]
    cv = card["metrics"].get("cross_validation", {}).get("roc_auc")
    cv_text = f", {cv and len(cv['per_fold'])}-fold AUC {cv['mean']:.3f}±{cv['sd']:.3f}" if cv else ""
    auc = "n/a" if held["roc_auc"] is None else f"{held['roc_auc']:.3f}"
    return (f"{card['name']}: {card['data']['rows_used']} rows, held-out {held['n']}: AUC {auc}, "
            f"precision {held['precision']:.3f}, recall {held['recall']:.3f}{cv_text}; "
            f"model {card['model']['bytes']:,} bytes -> {out}")


def _copy_cards(out: Path, cards_dir: Path | None, name: str) -> None:
    if cards_dir is None:
        return
    cards_dir.mkdir(parents=True, exist_ok=True)
    for ext in ("json", "md"):
        shutil.copyfile(out / f"card.{ext}", cards_dir / f"{name}.{ext}")


@classifier_app.command("train")
def train(
    recipe: Path | None = typer.Option(None, "--recipe", help="A recipe YAML (classifiers/recipes/*.yaml): data, "
                                                                 "labels, hyperparameters; flags override it"),
    positive: list[str] | None = typer.Option(None, "--positive", help="Label-1 rows. " + SOURCE_HELP),
    negative: list[str] | None = typer.Option(None, "--negative", help="Label-0 rows. " + SOURCE_HELP),
    labelled: Path | None = typer.Option(None, "--labelled", help="A .jsonl/.json/.parquet of rows with a label "
                                                                     "column (0/1, or ratings 0..5 from `classifier label`)"),
    labels_run: str | None = typer.Option(None, "--labels", metavar="RUN", help="The human labels of a run "
                                           "(`dataforge browse`: good = 1, bad = 0, texts joined from the run's rows)"),
    label_column: str = typer.Option("label", "--label-column", help="Column of --labelled holding the label"),
    kind: str = typer.Option("auto", "--kind", help="auto | binary | rating (labels of --labelled)"),
    text_column: str = typer.Option("text", "--text-column", help="Text column of sources that name none, and of --labelled"),
    name: str | None = typer.Option(None, "--name", help="Model name [default: the recipe's, else 'quality']"),
    out: Path | None = typer.Option(None, "--out", "-o", help="Model folder [default: <data root>/models/<name>/]"),
    data_root: str | None = typer.Option(None, "--data-root", help=DATA_ROOT_HELP),
    shared_data: Path | None = typer.Option(None, "--shared-data",
                                               help="Value of ${DATAFORGE_SHARED_DATA} in a recipe "
                                                    "[env DATAFORGE_SHARED_DATA; default: ../shared/data]"),
    cards_dir: Path | None = typer.Option(None, "--cards-dir", help="Also copy the card to DIR/<name>.md|json"),
    epochs: int | None = typer.Option(None, "--epochs", help="Epochs [DCLM: 5]"),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate [DCLM: 0.1]"),
    dim: int | None = typer.Option(None, "--dim", help="Vector size [DCLM: 100]"),
    word_ngrams: int | None = typer.Option(None, "--word-ngrams", help="Word n-grams [DCLM: 2]"),
    bucket: int | None = typer.Option(None, "--bucket", help="Hash buckets for n-grams [fastText: 2000000]"),
    valid_fraction: float | None = typer.Option(None, "--valid-fraction", help="Held-out share, stratified [0.1]"),
    folds: int | None = typer.Option(None, "--folds", help="Also k-fold cross-validation (k >= 2; 0: none)"),
    seed: int | None = typer.Option(None, "--seed", help="Split and training seed [0]"),
    cutoff: int | None = typer.Option(None, "--cutoff", help="Words/n-grams kept by quantization [100000]"),
    no_quantize: bool = typer.Option(False, "--no-quantize", help="Keep the full model (model.bin, ~800 MB with "
                                                                    "2M buckets) instead of the quantized model.ftz"),
) -> None:
    """Train a fastText quality classifier and write the model with its card.

    Labels come from a recipe, from --positive/--negative sources (label 1 / 0), from a
    --labelled file, or from a run's good/bad labels made in `dataforge browse` (--labels RUN).
    Defaults are DCLM's (supervised, word bigrams, lr 0.1, dim 100, 5 epochs,
    one thread with a seed: deterministic). A stratified held-out split gives precision,
    recall, F1 (at 0.5; for ratings at an expected rating >= 2.5) and ROC-AUC, before and after
    quantization; card.md and card.json (sources with sha256, label counts, hyperparameters,
    metrics, sizes) are written beside model.ftz. Example:

      dataforge classifier train --recipe classifiers/recipes/web_quality.yaml --out models/web
    """
    from dataforge.curate.classifier import (
        Labelled,
        TrainParams,
        labelled_from_file,
        labelled_from_recipe,
        labelled_from_sources,
        load_recipe,
        parse_source,
        path_resolver,
        train_classifier,
    )

    if kind not in ("auto", "binary", "rating"):
        fail(f"--kind must be auto, binary or rating, got {kind!r}")
    given = [x for x in (recipe, labelled, positive or negative, labels_run) if x]
    if len(given) != 1:
        fail("give one of --recipe, --labelled FILE, --labels RUN, or --positive SRC and --negative SRC")
    extra: dict = {}
    if recipe is not None:
        rec = load_recipe(recipe)
        resolve = path_resolver(recipe.resolve().parent, shared_data)
        data: Labelled = labelled_from_recipe(rec, resolve)
        base, model_name, description = rec.params, name or rec.name, rec.description
        extra = {"recipe": str(recipe), **({"licence": rec.licence} if rec.licence else {})}
    else:
        resolve = path_resolver(None, shared_data)
        base, model_name, description = TrainParams(), name or "quality", ""
        if labels_run is not None:
            from dataforge.curate.classifier import labelled_from_run

            data = labelled_from_run(common.pick_run(data_root, labels_run))
            model_name = name or "human_labels"
            description = f"good vs bad samples as labelled in `dataforge browse` on run {labels_run}"
        elif labelled is not None:
            data = labelled_from_file(labelled, text_column, label_column, kind)  # type: ignore[arg-type]
        else:
            if not positive or not negative:
                fail("give both --positive and --negative sources")
            data = labelled_from_sources([parse_source(s, text_column) for s in positive or []],
                                         [parse_source(s, text_column) for s in negative or []], resolve)
    params = _params(base, epoch=epochs, lr=lr, dim=dim, word_ngrams=word_ngrams, valid_fraction=valid_fraction,
                     folds=folds, seed=seed, cutoff=cutoff, bucket=bucket,
                     quantize=False if no_quantize else None)
    target = out or Path(common.data_root(data_root)) / "models" / model_name
    card = train_classifier(data, params, target, model_name, description, extra_card=extra,
                            progress=lambda m: typer.echo(m, err=True))
    _copy_cards(target, cards_dir, model_name)
    typer.echo(_summary(card, target))


@classifier_app.command("label")
def label(
    input: Path = typer.Argument(..., help="Rows to rate: .jsonl or .parquet"),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for kept.parquet (rated rows: label, label_reasoning), "
                                                      "rejected.parquet (teacher failures) and quarantine.jsonl"),
    text_column: str = typer.Option("text", "--text-column", help="Column holding the text"),
    sample: int | None = typer.Option(500, "--sample", min=1, help="Rows drawn at random to rate (all if fewer)"),
    seed: int = typer.Option(0, "--seed", help="Sampling seed (and the teacher's seed)"),
    rubric: Path | None = typer.Option(None, "--rubric", help="Rubric prompt with {text} "
                                                                 "[default: classifiers/rubrics/educational_value.md]"),
    max_chars: int = typer.Option(4000, "--max-chars", min=100, help="Characters of each row shown to the teacher"),
    max_tokens: int = typer.Option(300, "--max-tokens", min=16, help="Tokens of each rating reply"),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, max=2.0,
                                      help="Sampling temperature of the ratings [0: greedy]; above 0 with "
                                           "another --seed re-rates the same rows for a test-retest check"),
    config: Path | None = typer.Option(None, "--config", help="Pipeline YAML whose `teacher` section names the "
                                                                 "teacher [default: the embedded local teacher]"),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint (overrides the config)"),
    teacher_model: str | None = typer.Option(None, "--teacher-model", help="Teacher model name (overrides the config)"),
    data_root: str | None = typer.Option(None, "--data-root", help=DATA_ROOT_HELP + "; the request cache is "
                                                                                     "<data root>/cache/teacher.sqlite"),
    train_model: bool = typer.Option(False, "--train", help="Then train a rating model on the labels"),
    name: str = typer.Option("educational_value", "--name", help="Name of the model --train writes"),
    model_out: Path | None = typer.Option(None, "--model-out", help="Model folder for --train "
                                                                       "[default: <data root>/models/<name>/]"),
    folds: int | None = typer.Option(None, "--folds", help="With --train: k-fold cross-validation too"),
    dim: int | None = typer.Option(None, "--dim", help="With --train: vector size [100]"),
    bucket: int | None = typer.Option(None, "--bucket", help="With --train: n-gram hash buckets [2000000]"),
) -> None:
    """Have the teacher rate a sample of rows on a 0..5 rubric (hybrid labelling, FineWeb-Edu).

    Each rating is structured output {reasoning, score 0..5}, validated (an invalid reply is
    asked again), cached (a re-run pays nothing) and written as `label`; a row whose request
    fails for good goes to rejected.parquet with drop_reason teacher_error:<reason>. With
    --train a fastText model learns the ratings (quality_score = expected rating 0..5).
    """
    from dataforge.config import PipelineConfig, TeacherConfig, load_config
    from dataforge.curate.classifier import (
        TrainParams,
        labelled_from_file,
        train_classifier,
    )
    from dataforge.curate.rubric import (
        attach_ratings,
        load_rubric,
        rate_texts,
        sample_rows,
    )
    from dataforge.progress import progress_bar
    from dataforge.tabular import read_text_table, write_kept_rejected
    from dataforge.teacher import RequestCache, TeacherClient

    cfg = load_config(config) if config else PipelineConfig()
    prompt = load_rubric(rubric)
    table, quarantined = read_text_table(input, text_column)
    teacher_cfg = cfg.teacher
    if base_url or teacher_model:
        data = teacher_cfg.model_dump()
        if base_url:
            data.update(provider="openai", base_url=base_url)
        data["model"] = teacher_model or data["model"]
        teacher_cfg = TeacherConfig.model_validate(data)
    root = Path(common.data_root(data_root))
    rows = sample_rows(table, sample, seed)
    texts = rows.column("text").to_pylist()

    async def go(url: str | None):
        cache = RequestCache(root / "cache" / "teacher.sqlite")
        client = TeacherClient(teacher_cfg, cache, base_url=url)
        try:
            with progress_bar("rubric ratings", len(texts), status=client.stats.summary) as advance:
                return await rate_texts(client, texts, prompt, max_chars=max_chars, max_tokens=max_tokens,
                                        temperature=temperature, seed=seed, on_done=advance), client.stats
        finally:
            await client.aclose()
            cache.close()

    from dataforge.teacher.local import local_teacher

    if teacher_cfg.provider == "local":
        with local_teacher(teacher_cfg, root / "teacher") as url:
            ratings, stats = asyncio.run(go(url))
    else:
        ratings, stats = asyncio.run(go(None))
    kept, rejected = attach_ratings(rows, ratings, teacher_cfg.model)
    summary = write_kept_rejected(out, kept, rejected, quarantined, text_column)
    counts = {s: sum(1 for r in ratings if r.score == s) for s in range(6)}
    typer.echo(f"rated {kept.num_rows} of {len(texts)} sampled rows ({table.num_rows} read, {len(quarantined)} quarantined), "
          f"{rejected.num_rows} failed; scores {counts}; teacher {stats.summary()} -> {out}")
    if not train_model:
        return
    data = labelled_from_file(Path(summary["kept_file"]), text_column, "label", "rating")
    params = _params(TrainParams(), folds=folds, seed=seed, dim=dim, bucket=bucket)
    target = model_out or root / "models" / name
    card = train_classifier(data, params, target, name, f"Educational value 0..5 learned from {teacher_cfg.model}'s "
                            f"ratings of {len(texts)} rows of {input}", extra_card={"rubric": str(rubric or "default")},
                            progress=lambda m: typer.echo(m, err=True))
    typer.echo(_summary(card, target))


def classify_command(
    input: Path = typer.Argument(..., help="Rows to score: .jsonl or .parquet"),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for kept.parquet, rejected.parquet, quarantine.jsonl"),
    model: Path | None = typer.Option(None, "--model", "-m", help="fastText model (.ftz/.bin) [default: the "
                                                                     "config's quality.model]"),
    text_column: str = typer.Option("text", "--text-column", help="Column holding the text"),
    threshold: float | None = typer.Option(None, "--threshold", help="Drop rows scoring below this"),
    top_fraction: float | None = typer.Option(None, "--top-fraction", help="Keep this best-scoring fraction"),
    config: Path | None = typer.Option(None, "--config", help="Pipeline YAML whose `quality` section (model, cut, "
                                                                 "apply_to, batch_rows) sets the defaults"),
    batch_rows: int | None = typer.Option(None, "--batch-rows", min=1, help="Rows scored at once [20000]"),
) -> None:
    """Score every row with a fastText quality model and cut (standalone `quality` stage).

    Adds quality_score (binary model: P(positive) 0..1; rubric model: expected rating 0..5) and
    quality_model. With --threshold or --top-fraction the rest go to rejected.parquet with
    drop_reason quality:below_threshold(score<t) / below_top_fraction(score<cutoff); with
    neither every row is kept. Rows whose `kind` is outside the config's apply_to are not
    scored. Malformed JSON lines go to quarantine.jsonl.
    """
    from dataforge.config import QualityConfig, load_config
    from dataforge.cli.standalone import read_input, run_on_file
    from dataforge.curate.quality import apply_quality
    from dataforge.progress import progress_bar

    pcfg = load_config(config) if config else None
    base = pcfg.quality if pcfg else QualityConfig()
    data = base.model_dump()
    data["enabled"] = True
    if model is not None:
        data["model"] = str(model)
    elif pcfg is not None and base.model:
        data["model"] = str(pcfg.resolve_path(base.model))
    if threshold is not None or top_fraction is not None:
        data["cut"] = {"threshold": threshold, "top_fraction": top_fraction}
    if batch_rows is not None:
        data["batch_rows"] = batch_rows
    qcfg = common.section(QualityConfig, data, {}, "quality")
    table, quarantined = read_input(input, text_column)
    if table.num_rows == 0 and quarantined:
        fail(f"{input}: all {len(quarantined)} rows were quarantined (line {quarantined[0].line}: "
             f"{quarantined[0].reason}); is the text column {text_column!r}? (--text-column)")

    def apply(table):
        with progress_bar(f"quality score ({qcfg.batch_rows} rows a batch)",
                          max(1, math.ceil(table.num_rows / qcfg.batch_rows))) as advance:
            return apply_quality(table, qcfg, qcfg.model, on_batch=lambda n: advance())

    kept, rejected, quarantined = run_on_file(input, out, text_column, apply, rows=(table, quarantined))
    scores = kept.column("quality_score").to_numpy(zero_copy_only=False)
    cut = ("no cut" if qcfg.cut is None else f"threshold {qcfg.cut.threshold}" if qcfg.cut.threshold is not None
           else f"top fraction {qcfg.cut.top_fraction}")
    mean_kept = f"{float(scores[~_isnan(scores)].mean()):.3f}" if len(scores) and (~_isnan(scores)).any() else "n/a"
    typer.echo(f"scored {kept.num_rows + rejected.num_rows} rows with {qcfg.model} ({cut}): kept {kept.num_rows} (mean score {mean_kept}), "
          f"dropped {rejected.num_rows}, quarantined {len(quarantined)} -> {out}")


def _isnan(a):
    import numpy as np

    return np.isnan(a.astype(float))

