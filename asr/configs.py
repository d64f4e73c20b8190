"""Training configurations that build on a base: ``# base: FILE`` on a config's first
line (conf/synthetic/large.yaml over demo.yaml). :func:`expand_configs` puts the
bases before each ``--config`` of an ``asr train`` command line; LightningCLI lets
a later file override an earlier one."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ConfigError", "config_bases", "expand_configs"]


class ConfigError(ValueError):
    """Configs that cannot be combined; the message names them."""


_BASE_LINE = re.compile(r"#\s*base:\s*(\S+)")


def config_bases(config: str | os.PathLike[str]) -> list[Path]:
    """The configs ``config`` builds on, the deepest base first, then itself.

    A config whose first line is ``# base: FILE`` holds only the keys that differ
    from FILE (a path relative to the config's directory), so the larger recipes'
    configurations are small deltas over one base per recipe.

    Raises:
        FileNotFoundError: a config or a base that does not exist (named).
        ConfigError: configs that name each other as bases.
    """
    chain: list[Path] = []
    path = Path(config)
    while True:
        if path in chain:
            loop = " -> ".join(str(p) for p in [*reversed(chain), path])
            raise ConfigError(f"configs name each other as bases: {loop}")
        chain.append(path)
        try:
            with open(path, encoding="utf-8") as f:
                first = f.readline()
        except FileNotFoundError:
            where = f" (the base of {chain[-2]})" if len(chain) > 1 else ""
            raise FileNotFoundError(f"{path}: no such config file{where}") from None
        found = _BASE_LINE.match(first)
        if not found:
            return list(reversed(chain))
        path = path.parent / found.group(1)


def expand_configs(argv: Sequence[str]) -> list[str]:
    """``argv`` with each ``--config DELTA`` preceded by ``--config BASE`` for the
    bases it names (:func:`config_bases`), unless the command line gives that base
    itself; later configs override earlier ones (LightningCLI)."""
    out: list[str] = []
    given: set[Path] = set()
    i = 0
    while i < len(argv):
        arg = argv[i]
        value = None
        if arg == "--config" and i + 1 < len(argv):
            value, i = argv[i + 1], i + 2
        elif arg.startswith("--config="):
            value, i = arg.split("=", 1)[1], i + 1
        else:
            out.append(arg)
            i += 1
            continue
        for path in config_bases(value):
            key = path.resolve()
            if key not in given:
                given.add(key)
                out += ["--config", str(path)]
    return out
