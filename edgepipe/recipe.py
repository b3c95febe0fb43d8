"""Load a YAML recipe into a validated :class:`Recipe`, with ``file:line`` on every error."""

from __future__ import annotations

__all__ = ["ID_PATTERN", "Recipe", "did_you_mean", "load_recipe", "parse_recipe"]

from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import ConfigDict, Field, PrivateAttr, StringConstraints, ValidationError

from edgepipe import stages as _stages  # noqa: F401  (registers every stage type)
from edgepipe.errors import RecipeError, RecipeIssue
from edgepipe.matrix import expand_matrix
from edgepipe.models.package_files import is_package_reference, package_file_problem
from edgepipe.recipe_limits import (
    MAX_EXPANDED_ID_LENGTH,
    MAX_ID_LENGTH,
    MAX_RECIPE_BYTES,
    read_recipe_text,
    special_file_kind,
    too_big_message,
)
from edgepipe.recipe_messages import did_you_mean, issues_from_errors, kind_of, parse_yaml
from edgepipe.recipe_names import check_names
from edgepipe.recipe_text import check_control_characters
from edgepipe.stages.base import registered_stages
from edgepipe.strict_fields import StrictScalars
from edgepipe.yaml_lines import LineMap

ID_PATTERN = r"^[A-Za-z0-9_-]+$"
# ids a matrix expansion makes carry the cell: onnx[resnet50,int8]
EXPANDED_ID_PATTERN = r"^[A-Za-z0-9_-]+(\[[A-Za-z0-9_.,=-]+\])?$"
# lengths are checked first with a message saying why (recipe_names); these are for the schema
StageId = Annotated[
    str, StringConstraints(pattern=EXPANDED_ID_PATTERN, max_length=MAX_EXPANDED_ID_LENGTH)
]
Name = Annotated[str, StringConstraints(pattern=ID_PATTERN, max_length=MAX_ID_LENGTH)]
AnyStageSpec = Annotated[
    Union[tuple(stage.spec_class for stage in registered_stages().values())],  # noqa: UP007
    Field(discriminator="type"),
]


class Recipe(StrictScalars):
    """A pipeline: named stages whose ``input``/``inputs`` fields form a DAG."""

    model_config = ConfigDict(extra="forbid", title="edgepipe recipe")

    version: Literal[1] = Field(description="Recipe format version. Only 1 exists.")
    name: Name = Field(
        description="Recipe name: names the output folder build/<name>/ and the cache index. "
        "Letters, digits, '_' and '-' only."
    )
    description: str = Field(default="", description="Free text for humans.")
    matrix: dict[str, list[str | int | float]] | None = Field(
        default=None,
        description="Axes to repeat stages over, e.g. {model: [resnet50, efficientnet_lite0]}: "
        "a stage mentioning ${model} (or fed by one that does) runs once per value, as "
        'id[value]; `inputs: ["onnx[*]"]` collects every cell.',
    )
    stages: dict[StageId, AnyStageSpec] = Field(
        min_length=1,
        description="Stage id → stage spec. Ids are letters, digits, '_' and '-'; they are what "
        "logs, reports and `edgepipe plan` show.",
    )

    _path: Path | None = PrivateAttr(default=None)
    _lines: LineMap = PrivateAttr(default_factory=lambda: LineMap({}))

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def base_dir(self) -> Path:
        """Directory that relative paths in the recipe are resolved against."""
        return self._path.parent if self._path else Path.cwd()

    def line_of(self, *key_path: str | int) -> int | None:
        return self._lines.line_of(key_path)


def load_recipe(path: Path) -> Recipe:
    """Read and validate a recipe file; raises :class:`RecipeError` with file:line issues."""
    path = Path(path)
    return parse_recipe(read_recipe_text(path), path)


def parse_recipe(text: str, path: Path | None = None) -> Recipe:
    """Validate recipe text; ``path`` is used for messages and for resolving relative paths."""
    if len(text) > MAX_RECIPE_BYTES:
        raise RecipeError(path, [RecipeIssue(too_big_message())])
    data, lines = parse_yaml(text, path)
    if data is None:
        what = "is empty" if not text.strip() else "has no content (only comments)"
        raise RecipeError(
            path,
            [
                RecipeIssue(
                    f"the file {what}; a recipe needs 'version', 'name' and 'stages'", line=1
                )
            ],
        )
    if not isinstance(data, dict):
        raise RecipeError(
            path,
            [
                RecipeIssue(
                    "a recipe is a mapping with 'version', 'name' and 'stages', "
                    f"not a {kind_of(data)}",
                    line=lines.line_of(()),
                )
            ],
        )
    check_control_characters(data, lines, path)
    check_names(data, lines, path)
    data = expand_matrix(data, lines, path)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(path, issues_from_errors(exc.errors(), lines, Recipe)) from None
    recipe._path = path.resolve() if path else None
    recipe._lines = lines
    _check_files(recipe)
    return recipe


def _check_files(recipe: Recipe) -> None:
    issues = []
    for stage_id, spec in recipe.stages.items():
        wanted = [(name, rel, "file") for name, rel in spec.file_fields().items()]
        wanted += [(name, rel, "folder") for name, rel in spec.dir_fields().items()]
        for field_name, rel, kind in wanted:
            problem = _path_problem(recipe.base_dir / rel, rel, kind)
            if problem:
                line = recipe.line_of("stages", stage_id, field_name)
                issues.append(RecipeIssue(problem, line, stage_id, field_name))
    if issues:
        raise RecipeError(recipe.path, issues)


def _path_problem(target: Path, rel: Path, kind: str) -> str | None:
    if is_package_reference(rel):
        return package_file_problem(rel)
    if not target.exists():
        return f"{kind} not found: {rel} (resolved to {target}); paths are relative to the recipe"
    if kind == "file" and target.is_dir():
        return f"{rel} is a folder; a file is expected"
    if kind == "folder" and not target.is_dir():
        return f"{rel} is a file; a folder is expected"
    if kind == "file" and (special := special_file_kind(target)):
        # a FIFO waits for a writer forever and /dev/zero never ends: hashing either would hang
        return f"{rel} is a {special}, not a regular file; a regular file is expected"
    return None
