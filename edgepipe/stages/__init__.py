"""Stage types. Importing this package registers every built-in stage.

Adding a stage type is one new module here, imported below; nothing else changes.
"""

from edgepipe.stages import export, load, simplify  # noqa: F401  (registration side effect)
from edgepipe.stages.base import get_stage, registered_stages

__all__ = ["get_stage", "registered_stages"]
