"""The training code behind the committed task weights (``make task-assets``) still trains: a few
steps of each model, whose weights then load into the factory a recipe names. The suite gates
the committed weights themselves (tests/test_tasks.py); this keeps the code that made them
runnable, so that a rebuild of the assets cannot rot unseen."""

from __future__ import annotations

import math

import pytest

pytestmark = pytest.mark.slow


def test_each_task_model_trains_a_few_steps_and_its_weights_load(tmp_path):
    import torch
    from safetensors.torch import load_model

    from pipelines.models import crnn, scenes, shapes

    torch.set_num_threads(1)
    detector, measured = shapes.train_detector(0, steps=3, evaluate=False)
    segmenter, _ = shapes.train_segmenter(0, steps=3, evaluate=False)
    recogniser, accuracy = crnn.train(seed=0, steps=3, batch=4)
    assert measured["train_seconds"] > 0 and 0.0 <= accuracy <= 1.0
    for name, model, factory in (
        ("detector", detector, shapes.detector),
        ("segmenter", segmenter, shapes.segmenter),
        ("crnn", recogniser, crnn.crnn),
    ):
        path = tmp_path / f"{name}.safetensors"
        (crnn.save if name == "crnn" else shapes.save)(model, path)
        fresh = factory()
        load_model(fresh, str(path))
        weights = [p for p in fresh.parameters() if p.dtype.is_floating_point]
        assert all(math.isfinite(float(p.detach().abs().sum())) for p in weights), name

    written = scenes.write_dataset(tmp_path / "scenes", 2)
    assert len(list((written / "images").glob("*.png"))) == 2
    assert (written / "instances.json").is_file()
