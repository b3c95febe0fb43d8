"""Models the suite trains itself for the tasks beyond classification, with the labelled data
their gates and ``evaluate`` run on: torchvision's RetinaNet and LR-ASPP on synthetic shape scenes
(``pipelines/models/shapes.py``) and a CRNN on text lines rendered with Pillow's font
(``pipelines/models/crnn.py``). Trained weights make "same detections", "same mask" and "same
string" mean something: random weights give flat scores that agree with anything.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DETECTOR_STEPS = 300
SEGMENTER_STEPS = 300
CRNN_STEPS = 160
SCENES = 12  # held-out scenes: parity images, COCO and mask ground truth
LINES = 24  # held-out text lines with labels


@dataclass(frozen=True)
class TaskModels:
    folder: Path
    metrics: dict

    def path(self, name: str) -> Path:
        return self.folder / name

    def load_stages(self) -> list[str]:
        """Recipe lines loading the three trained models, plus one deliberately broken artifact
        of each: a score threshold raised in the graph, a mask shifted by 4 pixels, the CTC
        blank moved to the last class."""
        det = (
            "type: load, source: callable, factory: 'pipelines.models.shapes:detector', "
            f"weights: {self.path('detector.safetensors')}, task: detection, "
            "data_config: {input_size: [3, 160, 160], crop_mode: none, mean: [0, 0, 0], "
            "std: [1, 1, 1]}"
        )
        seg = (
            "type: load, source: callable, factory: 'pipelines.models.shapes:segmenter', "
            f"weights: {self.path('segmenter.safetensors')}, task: segmentation, "
            "data_config: {input_size: [3, 160, 160], crop_mode: squash, crop_pct: 1.0, "
            "interpolation: bilinear, mean: [0, 0, 0], std: [1, 1, 1]}"
        )
        ocr = (
            "type: load, source: callable, factory: 'pipelines.models.crnn:crnn', "
            f"weights: {self.path('crnn.safetensors')}, ctc: {{alphabet: '0123456789'}}, "
            "data_config: {input_size: [1, 32, 128], crop_mode: height, "
            "interpolation: bilinear, mean: [0.5], std: [0.5]}"
        )
        return [
            f"  det: {{{det}}}",
            f"  det_loose: {{{det}, model_kwargs: {{score_thresh: 0.5}}}}",
            f"  seg: {{{seg}}}",
            f"  seg_shifted: {{{seg}, model_kwargs: {{shift: 4}}}}",
            f"  ocr: {{{ocr}}}",
            f"  ocr_blank_last: {{{ocr}, model_kwargs: {{blank_last: true}}}}",
        ]


def train_task_models(folder: Path) -> TaskModels:
    """Train once into ``folder`` (reused when it is already there)."""
    done = folder / "metrics.json"
    if done.is_file():
        return TaskModels(folder, json.loads(done.read_text()))
    folder.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO))
    import torch

    from edgepipe.imaging.text_lines import write_labelled_lines
    from pipelines.models import crnn, scenes, shapes

    # one thread: the other xdist worker runs beside it, and two threads then crawl
    torch.set_num_threads(1)
    metrics = {}
    detector, metrics["detector"] = shapes.train_detector(0, DETECTOR_STEPS, evaluate=False)
    shapes.save(detector, folder / "detector.safetensors")
    segmenter, metrics["segmenter"] = shapes.train_segmenter(0, SEGMENTER_STEPS, evaluate=False)
    shapes.save(segmenter, folder / "segmenter.safetensors")
    recogniser, metrics["crnn_accuracy"] = crnn.train(seed=0, steps=CRNN_STEPS)
    crnn.save(recogniser, folder / "crnn.safetensors")
    scenes.write_dataset(folder / "scenes", SCENES)
    write_labelled_lines(folder / "lines", LINES, seed=77_777)
    done.write_text(json.dumps(metrics))
    return TaskModels(folder, metrics)
