"""Recipe files: YAML stating only their differences from the defaults (or from the recipe
they ``inherit:``). Built-in recipes live in ``senet/recipes/`` and are named by their path
without ``.yaml`` (``cifar10/se_resnet110``); any other ``.yaml`` file can be given by path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from senet.errors import ConfigError
from senet.train.config import Config, config_from_dict, merge, parse_override, with_epochs
from senet.utils.text import read_yaml

RECIPE_DIR = Path(__file__).resolve().parent.parent / "recipes"
DEFAULT_RECIPE = "default"


def list_recipes() -> list[str]:
    """Names of the built-in recipes."""
    return sorted(p.relative_to(RECIPE_DIR).with_suffix("").as_posix() for p in RECIPE_DIR.rglob("*.yaml"))


def recipe_path(name: str) -> Path:
    """The file of a built-in recipe name or of a path to a ``.yaml`` file."""
    as_path = Path(name)
    if as_path.suffix in (".yaml", ".yml") or as_path.exists():
        if not as_path.is_file():
            raise ConfigError(f"recipe file {name} does not exist")
        return as_path
    builtin = RECIPE_DIR / f"{name}.yaml"
    if builtin.is_file():
        return builtin
    import difflib

    names = list_recipes()
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
    hint = f" (closest: {', '.join(close)})" if close else ""
    raise ConfigError(f"unknown recipe {name!r}{hint}; built-in recipes: {', '.join(names)}")


def read_recipe(name: str, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe's values merged over the recipes it inherits from (not yet over defaults)."""
    path = recipe_path(name).resolve()
    if path in _seen:
        chain = " -> ".join(p.name for p in (*_seen, path))
        raise ConfigError(f"recipe inheritance loops: {chain}")
    values = read_yaml(path, (dict, type(None)), what="a recipe") or {}
    parent = values.pop("inherit", None)
    if parent is None:
        return values
    if not isinstance(parent, str):
        raise ConfigError(f"recipe {path}: 'inherit' must name one recipe, got {parent!r}")
    if not Path(parent).is_absolute() and (path.parent / parent).suffix in (".yaml", ".yml"):
        parent = str(path.parent / parent)  # a file path relative to the recipe
    base = read_recipe(parent, (*_seen, path))
    base.pop("description", None)
    return merge(base, values)


def resolve(
    recipe: str | None = None,
    overrides: Sequence[str | dict[str, Any]] = (),
    *,
    epochs: int | None = None,
) -> Config:
    """Defaults, then the recipe, then ``--epochs`` (keeping the schedule's shape), then the
    overrides (dotted ``"section.key=value"`` strings or nested mappings), validated into a
    :class:`Config`."""
    name = recipe or DEFAULT_RECIPE
    values = merge(Config().to_dict(), read_recipe(name))
    values["recipe"] = name
    if epochs is not None:
        values = with_epochs(values, epochs)
    for item in overrides:
        values = merge(values, parse_override(item) if isinstance(item, str) else item)
    return config_from_dict(values)
