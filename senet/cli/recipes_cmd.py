"""``senet recipes``: the built-in recipes, or one recipe resolved."""

from __future__ import annotations

import argparse

HELP = "list the built-in training recipes, or print one resolved (`senet recipes NAME`)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="a recipe name or .yaml file to print fully resolved")


def run(args: argparse.Namespace) -> int:
    from senet.train import list_recipes, read_recipe, resolve

    if args.name:
        print(resolve(args.name).to_yaml(), end="")
        return 0
    names = list_recipes()
    width = max(map(len, names))
    for name in names:
        description = " ".join(str(read_recipe(name).get("description", "")).split())
        print(f"{name:<{width}}  {description[:100]}")
    return 0
