"""Recipes (``classifiers/recipes/*.yaml``): which data, which labels, which hyperparameters."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from dataforge.curate.classifier.common import ClassifierError, Spec, validation_message
from dataforge.curate.classifier.labels import Kind, Labelled, labelled_from_file, labelled_from_sources
from dataforge.curate.classifier.sources import PathResolver, SourceSpec
from dataforge.curate.classifier.train import TrainParams


class LabelledSpec(Spec):
    file: str
    text: str | list[str] = "text"
    label_column: str = "label"
    kind: Kind = "auto"


class Recipe(Spec):
    """``classifiers/recipes/*.yaml``: which data, which labels, which hyperparameters."""

    name: str
    description: str = ""
    licence: str | None = None
    positive: list[SourceSpec] = Field(default_factory=list)
    negative: list[SourceSpec] = Field(default_factory=list)
    labelled: LabelledSpec | None = None
    params: TrainParams = TrainParams()

    @field_validator("name")
    @classmethod
    def _plain(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError("a plain name: letters, digits, '_', '-', '.'")
        return v

    @model_validator(mode="after")
    def _labels(self) -> Recipe:
        if self.labelled is not None and (self.positive or self.negative):
            raise ValueError("give labelled, or positive and negative sources, not both")
        if self.labelled is None and not (self.positive and self.negative):
            raise ValueError("give positive and negative sources (or labelled)")
        return self


def load_recipe(path: Path) -> Recipe:
    if not path.exists():
        raise ClassifierError(f"{path}: recipe not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ClassifierError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ClassifierError(f"{path}: a recipe is a mapping of fields")
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise ClassifierError(f"{path}: " + validation_message(err)) from None


def labelled_from_recipe(recipe: Recipe, resolve: PathResolver) -> Labelled:
    if recipe.labelled is not None:
        lab = recipe.labelled
        return labelled_from_file(resolve(lab.file), lab.text, lab.label_column, lab.kind)
    return labelled_from_sources(recipe.positive, recipe.negative, resolve)
