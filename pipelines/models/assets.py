"""Rebuild what the task recipes (detection_cpu, segmentation_cpu, ocr_crnn) load: the trained
weights in ``pipelines/models/weights/`` and the labelled samples in ``pipelines/data/``.

They are committed (6 MB) so that the recipes run on a fresh clone with no network; this is how
they were made (``make task-assets``, about 2 minutes on 2 cores). Training is seeded but not
bit-identical across CPUs: a rebuild gives weights of the same quality, not the same bytes, and
so new keys in the recipes' locks.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

PIPELINES = Path(__file__).resolve().parent.parent
WEIGHTS = PIPELINES / "models" / "weights"
DATA = PIPELINES / "data"
SCENES = 16  # parity images, COCO boxes and masks of the shape scenes
LINES = 32  # labelled text lines for evaluate


def main() -> None:
    import torch

    from edgepipe.imaging.text_lines import write_labelled_lines

    from . import crnn, scenes, shapes

    torch.set_num_threads(2)
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    measured = {}
    started = time.perf_counter()
    detector, measured["detector"] = shapes.train_detector(seed=0)
    shapes.save(detector, WEIGHTS / "detector.safetensors")
    segmenter, measured["segmenter"] = shapes.train_segmenter(seed=0)
    shapes.save(segmenter, WEIGHTS / "segmenter.safetensors")
    recogniser, accuracy = crnn.train(seed=0)
    measured["crnn"] = {"held_out_accuracy": accuracy}
    crnn.save(recogniser, WEIGHTS / "crnn.safetensors")
    scenes.write_dataset(DATA / "shapes", SCENES, seed=20_000)
    write_labelled_lines(DATA / "text_lines", LINES, seed=424_242)
    measured["seconds"] = round(time.perf_counter() - started, 1)
    (WEIGHTS / "trained.json").write_text(json.dumps(measured, indent=2) + "\n")
    print(json.dumps(measured, indent=2), file=sys.stderr)


if __name__ == "__main__":
    main()
