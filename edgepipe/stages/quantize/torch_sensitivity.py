"""Which modules of a PT2E INT8 model cost the most accuracy, measured with torchao's numeric
debugger: the float and the quantized graph log every node's output on the same samples, and
each node gets its SQNR against the float model (dB; higher is better).

Error accumulates along the graph, so a module's cost is what it *loses*: walking the graph in
order, the drop from the last measured SQNR to the next one is charged to the last quantized
conv/linear module seen. A conv whose BatchNorm PT2E folded has no float counterpart (its
float output is pre-BatchNorm): values below ``_MEANINGLESS_DB`` are skipped, and the
activation after it carries its cost. The image enters at ~``_INPUT_DB``, uint8's own noise.
"""

from __future__ import annotations

__all__ = ["sensitive_modules"]

import math
from typing import Any

_INPUT_DB = 49.9  # 6.02 * 8 + 1.76: a full-range signal quantized to 8 bits
_MEANINGLESS_DB = 3.0
_WEIGHTED = ("conv", "linear")


def sensitive_modules(backend, settings: dict[str, Any], samples: list[Any]) -> list[tuple]:
    """(module name, dB lost) for the modules ``settings`` quantize, most costly first."""
    import numpy as np
    import torch
    from torchao.quantization.pt2e import (
        compare_results,
        extract_results_from_loggers,
        generate_numeric_debug_handle,
        prepare_for_propagation_comparison,
    )

    from edgepipe.models.torch_export import example_batch, export_program
    from edgepipe.models.torch_model import WRAPPED

    # a dynamic batch whatever the artifact's, so every sample is measured in one call
    example = example_batch(backend.source.meta, 2)
    program = export_program(backend.module, example, max_batch=len(samples) + 2)
    generate_numeric_debug_handle(program)
    float_logged = prepare_for_propagation_comparison(program.module())
    quantized_logged = prepare_for_propagation_comparison(
        backend.quantized_module(settings, program)
    )
    batch = torch.from_numpy(np.concatenate(samples))
    with torch.no_grad():
        float_logged(batch)
        quantized_logged(batch)
    compared = compare_results(
        extract_results_from_loggers(float_logged), extract_results_from_loggers(quantized_logged)
    )
    losses: dict[str, float] = {}
    previous, owner = _INPUT_DB, None
    kept_float = set(settings["float_modules"])
    for summary in compared.values():  # graph order
        module = summary.ref_module_stack.removeprefix(f"{WRAPPED}.")
        if summary.ref_node_name.startswith(_WEIGHTED) and module not in kept_float:
            owner = module
        sqnr = min(float(result.sqnr) for result in summary.results)
        if not math.isfinite(sqnr) or sqnr < _MEANINGLESS_DB:  # nothing to compare, folded
            continue
        if owner is not None:
            losses[owner] = losses.get(owner, 0.0) + max(previous - sqnr, 0.0)
        previous = sqnr
    return sorted(losses.items(), key=lambda item: -item[1])
