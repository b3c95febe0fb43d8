"""Stage types. Importing this package registers every built-in stage.

Adding a stage type is one new module in this package with a ``@register_stage`` class; it is
found here, so nothing else changes. Modules import heavy libraries only inside functions, so
importing them all stays cheap.
"""

import importlib
import pkgutil

from edgepipe.stages.base import get_stage, registered_stages

__all__ = ["get_stage", "registered_stages"]

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
    importlib.import_module(f"{__name__}.{_module}")
