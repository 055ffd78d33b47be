"""Training fastText quality classifiers: sources, labels, a held-out split, metrics,
quantization and the model card (``dataforge classifier train``).

**Labels.** Either named *positive* and *negative* sources (DCLM's recipe: Li et al. 2024,
"DataComp-LM", trained a binary fastText model on high- vs low-quality sources), or a file of
labelled rows: 0/1 (binary) or teacher ratings 0..5 (FineWeb-Edu's hybrid method, Penedo et
al. 2024: an LLM rates a sample on a rubric, a small classifier learns the ratings).
The package, one module per step:

* :mod:`~dataforge.curate.classifier.sources` -- a source: a file, its text column(s), filters;
* :mod:`~dataforge.curate.classifier.labels` -- labelled texts, cleaning, stratified splits;
* :mod:`~dataforge.curate.classifier.metrics` -- held-out metrics (ROC-AUC, precision, ...);
* :mod:`~dataforge.curate.classifier.train` -- training, cross-validation, quantization;
* :mod:`~dataforge.curate.classifier.card` -- the model card (``card.json``, ``card.md``);
* :mod:`~dataforge.curate.classifier.recipes` -- recipe files;
* :mod:`~dataforge.curate.classifier.common` -- the error, the recipe models' base, the shared
  data folder.

Every public name is importable from here, as before the split.
"""

from __future__ import annotations

from dataforge.curate.classifier.card import card_markdown, write_card
from dataforge.curate.classifier.common import (
    REPO,
    SHARED_DATA_VAR,
    ClassifierError,
    Spec,
    default_shared_data,
    validation_message,
)
from dataforge.curate.classifier.labels import (
    Kind,
    Labelled,
    clean_labelled,
    label_kind,
    labelled_from_file,
    labelled_from_run,
    labelled_from_sources,
    stratified_folds,
    stratified_split,
)
from dataforge.curate.classifier.metrics import auc_ci95, average_ranks, binary_metrics, evaluate, roc_auc
from dataforge.curate.classifier.recipes import LabelledSpec, Recipe, labelled_from_recipe, load_recipe
from dataforge.curate.classifier.sources import (
    PathResolver,
    SourceRows,
    SourceSpec,
    column_values,
    joined_text,
    load_source,
    parse_source,
    path_resolver,
    read_records,
)
from dataforge.curate.classifier.train import (
    TrainParams,
    cross_validate,
    in_memory_model,
    train_classifier,
    zeroed_allocations,
)

__all__ = [
    "REPO", "SHARED_DATA_VAR", "ClassifierError", "Kind", "Labelled", "LabelledSpec", "PathResolver", "Recipe",
    "SourceRows", "SourceSpec", "Spec", "TrainParams", "auc_ci95", "average_ranks", "binary_metrics",
    "card_markdown", "clean_labelled", "column_values", "cross_validate", "default_shared_data", "evaluate",
    "in_memory_model", "joined_text", "label_kind", "labelled_from_file", "labelled_from_recipe",
    "labelled_from_run", "labelled_from_sources", "load_recipe", "load_source", "parse_source", "path_resolver", "read_records",
    "roc_auc", "stratified_folds", "stratified_split", "train_classifier", "validation_message", "write_card",
    "zeroed_allocations",
]
