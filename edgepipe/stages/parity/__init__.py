"""The ``parity`` stage type: an artifact against its source torch model.

``stage`` (spec and stage), ``compare`` (running both on the samples), ``metrics`` (cosine, KL,
errors, decided samples), ``gates`` (default thresholds for random and trained weights) and
``tables`` (the Markdown of parity.md).
"""

from edgepipe.stages.parity.stage import ParitySpec, ParityStage

__all__ = ["ParitySpec", "ParityStage"]
