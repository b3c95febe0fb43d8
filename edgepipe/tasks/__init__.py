"""Metrics for vision tasks other than classification: ``detection`` (box matching between a
reference and an artifact, COCO mAP), ``segmentation`` (per-pixel agreement, mIoU) and
``sequence`` (CTC text recognisers: greedy decoding, string agreement, character error rate);
``options`` holds the recipe options that configure them.
"""

from __future__ import annotations

__all__: list[str] = []
