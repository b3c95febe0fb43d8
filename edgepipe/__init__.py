"""edgepipe: declarative, cached, verified model-conversion pipelines."""

__version__ = "0.1.0"
