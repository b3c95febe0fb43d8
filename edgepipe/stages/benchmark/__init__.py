"""The ``benchmark`` stage type: artifacts timed on real images against torch eager.

``stage`` (spec and stage), ``measure`` (the rows), ``targets`` (how each artifact kind is
opened and run), ``timing`` (the clock) and ``tables`` (Markdown, plot, baseline gate).
"""

from edgepipe.stages.benchmark.stage import BenchmarkSpec, BenchmarkStage

__all__ = ["BenchmarkSpec", "BenchmarkStage"]
