"""Cut a composed model (``compose-preprocessing``) into its preprocessing and its network, and
join them again: quantization and down-casting touch the network only.

The preprocessing must stay exactly as composed: resize sizes and crop offsets are integer
arithmetic, and Resize, Round and normalisation must run in float32. Quantizing the whole graph
quantizes or rewrites that subgraph (and ORT's optimiser once broke its Resize,
MEASUREMENTS #12). So the network is cut out at the preprocessing's output tensor, processed
on its own, and the untouched preprocessing (and post-processing) is joined back on.
"""

from __future__ import annotations

__all__ = ["NETWORK_INPUT", "Split", "is_composed", "join_network", "split_composed"]

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepipe.imaging.graph_join import join
from edgepipe.imaging.preprocess_graph import OUTPUT
from edgepipe.models.onnx_io import ONNX_FILE

NETWORK_INPUT = "network_input"
_POSTPROCESS = "postprocess/"


def is_composed(meta: dict[str, Any]) -> bool:
    return meta.get("preprocessing") is not None


@dataclass
class Split:
    """A composed model's parts: the preprocessing model (image → tensor), the network model
    file (tensor → outputs) and how to post-process again."""

    preprocessing: Any
    network: Path
    postprocess: str
    top_k: int


def split_composed(source_dir: Path, meta: dict[str, Any], work: Path, external: bool) -> Split:
    """Write the network of ``source_dir``'s composed model to ``work/network.onnx``."""
    import onnx
    from onnx.utils import Extractor

    model = onnx.load(str(source_dir / ONNX_FILE))
    image = next(i.name for i in model.graph.input)
    network_outputs = _network_outputs(model.graph)
    extractor = Extractor(model)
    preprocessing = extractor.extract_model([image], [OUTPUT])
    network = extractor.extract_model([OUTPUT], network_outputs)
    _rename_input(network.graph, OUTPUT, NETWORK_INPUT)
    _copy_model_header(model, [preprocessing, network])
    work.mkdir(parents=True, exist_ok=True)
    target = work / "network.onnx"
    onnx.save(
        network,
        str(target),
        save_as_external_data=external,
        location="network.onnx.data" if external else None,
    )
    return Split(preprocessing, target, meta.get("postprocess") or "none", meta.get("top_k", 5))


def join_network(split: Split, network_file: Path, target: Path, external: bool) -> None:
    """The preprocessing joined onto the processed network, post-processing appended again."""
    import onnx

    network = onnx.load(str(network_file))
    join(split.preprocessing, network, NETWORK_INPUT, split.postprocess, split.top_k)
    onnx.save(
        network,
        str(target),
        save_as_external_data=external,
        location=f"{ONNX_FILE}.data" if external else None,
    )


def _network_outputs(graph: Any) -> list[str]:
    """The network's own outputs: what post-processing reads, and outputs it does not make."""
    post = [n for n in graph.node if n.name.startswith(_POSTPROCESS)]
    made_by_post = {o for n in post for o in n.output}
    constants = {t.name for t in graph.initializer}
    read = [i for n in post for i in n.input if i and i not in made_by_post | constants]
    kept = [o.name for o in graph.output if o.name not in made_by_post]
    return list(dict.fromkeys(read + kept))


def _rename_input(graph: Any, old: str, new: str) -> None:
    for value in graph.input:
        if value.name == old:
            value.name = new
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name == old:
                node.input[index] = new


def _copy_model_header(source: Any, models: list[Any]) -> None:
    """Extracted models keep the source's opsets and IR version (Extractor sets its own)."""
    for model in models:
        del model.opset_import[:]
        model.opset_import.extend(source.opset_import)
        model.ir_version = source.ir_version
