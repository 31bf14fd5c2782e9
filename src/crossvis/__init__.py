"""CrossVIS: crossover learning for fast online video instance segmentation (ICCV 2021)."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

__version__ = "0.1.0"

# The entry points live in crossvis.cli; their names of version 0.2 (python -m crossvis.train, ...)
# still run them, so that scripts and job files written for 0.2 keep working.
MOVED_ENTRY_POINTS = ("analyze", "benchmark", "convert", "demo", "evaluate", "export", "quickstart", "tables", "train")


class _MovedEntryPointFinder(importlib.abc.MetaPathFinder):
    """Finds ``crossvis.<name>`` for a moved entry point as the source of ``crossvis.cli.<name>``."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != __name__ or name not in MOVED_ENTRY_POINTS:
            return None
        origin = importlib.util.find_spec(f"{__name__}.cli.{name}").origin
        return importlib.util.spec_from_file_location(fullname, origin)


sys.meta_path.append(_MovedEntryPointFinder())
