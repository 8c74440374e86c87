"""Options whose values are the names of a registry (methods, strategies, runtimes, protocols).

The help text lists the registry as it is when help is shown, so a plug-in registered in one
line appears in ``--help`` with no CLI edit; it is built only then, because reading most
registries imports torch. The value is checked by the registry itself (a ConfigError with a
"did you mean"), not by argparse.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from vipr.cli.parser import _LazyHelpStore


def add_registry_flag(parser: argparse.ArgumentParser, flag: str, names: Callable[[], list[str]], *,
                      default_name: str | None = None, summary: Callable[[str], str] | None = None,
                      lead: str = "", **kwargs) -> None:
    """``flag`` whose help is ``lead`` + the registry's names (``a | b``, or ``a: what; b: what``)."""

    def text() -> str:
        found = names()
        listed = "; ".join(f"{n}: {summary(n)}" for n in found) if summary else " | ".join(found)
        tail = f" (default {default_name})" if default_name and not summary else ""
        return f"{lead}{listed}{tail}"

    parser.add_argument(flag, action=_LazyHelpStore, make_help=text, **kwargs)


def method_names() -> list[str]:
    from vipr.ssl import list_methods

    return list_methods()


def strategy_names() -> list[str]:
    from vipr.nas.strategy import list_strategies

    return list_strategies()


def runtime_names() -> list[str]:
    from vipr.serve.runtime import list_runtimes

    return list_runtimes()


def runtime_summary(name: str) -> str:
    from vipr.serve.runtime import runtime_summary as summary

    return summary(name)
