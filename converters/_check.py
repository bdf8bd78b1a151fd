"""Every artifact is checked against its source before the manifest records it.

The written file is loaded by its own runtime (the thin one a device uses) and compared with the
model it was made from: as many inputs and outputs, the outputs' shapes, and on a few test samples
outputs that are finite and, for float precisions, within the format's tolerance of the float
reference (``CHECK_TOLERANCE`` in each format's module: a fraction of the outputs' magnitude).
Quantized precisions are judged by ``validate`` on the whole test split; here they must only run
and stay finite. A file that fails is not recorded: convert removes it and says what differed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeship.errors import EdgeshipError, UnsupportedModelError

log = logging.getLogger(__name__)

#: test samples each artifact is run on before it is recorded

if TYPE_CHECKING:
    from edgeship.converters._source import SourceModel
SAMPLES = 8
_WEIGHT_NAME = re.compile(r"\d+:\d+|.*(kernel|bias|weight|const|variable).*", re.IGNORECASE)


def problems(
    path: Path,
    source: SourceModel,
    precision: str,
    tolerances: dict[str, float],
    inputs: Sequence[np.ndarray] | None,
    reference: Sequence[np.ndarray] | None,
) -> list[str]:
    """What differs between the artifact at ``path`` and ``source`` (an empty list: it matches).
    ``inputs`` and ``reference`` are the first test samples and the float model's outputs on them
    (None when convert has no data: then only the interface is compared)."""
    from edgeship.runtimes import can_run, load
    from edgeship.tasks import align

    runnable, why = can_run(path)
    if not runnable:
        log.info("%s not checked against its source here: %s", path.name, why)
        return []
    try:
        session = load(path)
    except UnsupportedModelError as exc:  # e.g. an op the numpy Core ML evaluator lacks: validate says so too
        log.info("%s not checked against its source here: %s", path.name, exc)
        return []
    with session:
        found = _interface(session, len(source.input_specs), None if reference is None else len(reference))
        if found or inputs is None or reference is None:
            return found
        try:
            outputs = align(reference, session.predict_outputs([a[:SAMPLES] for a in inputs]))
        except EdgeshipError as exc:
            return [f"it does not run on {SAMPLES} test samples: {exc}"]
        names = [s.name for s in session.outputs]
    for i, (ref, out) in enumerate(zip(reference, outputs)):
        ref = np.asarray(ref[:SAMPLES], np.float64)
        out = np.asarray(out, np.float64)
        name = names[i] if i < len(names) else str(i)
        if out.shape != ref.shape:
            found.append(f"output {name!r} has shape {out.shape[1:]} per sample where the source's has {ref.shape[1:]}")
        elif not np.all(np.isfinite(out)):
            found.append(
                f"output {name!r} is not finite on {int(np.sum(~np.isfinite(out)))} values of {SAMPLES} test samples"
            )
        elif precision in tolerances:
            limit = tolerances[precision] * max(float(np.max(np.abs(ref), initial=0.0)), 1e-6) + 1e-6
            error = float(np.max(np.abs(out - ref), initial=0.0))
            if error > limit:
                found.append(
                    f"output {name!r} is {error:.3g} from the float model on {SAMPLES} test samples "
                    f"(a {precision} file stays within {limit:.3g})"
                )
    return found


def _interface(session: Any, want_inputs: int, want_outputs: int | None) -> list[str]:
    found = []
    have = list(session.inputs)
    if len(have) > want_inputs:
        extra = have[want_inputs:]
        weights = [s.name for s in extra if _WEIGHT_NAME.fullmatch(s.name)]
        what = " that look like weights" if len(weights) == len(extra) else ""
        found.append(
            f"{len(extra)} extra input(s){what}: {', '.join(s.name for s in extra[:4])}"
            f"{' …' if len(extra) > 4 else ''} (the source takes {want_inputs})"
        )
    elif len(have) < want_inputs:
        found.append(f"{want_inputs - len(have)} of the source's {want_inputs} inputs missing")
    if want_outputs is not None and len(session.outputs) != want_outputs:
        missing = want_outputs - len(session.outputs)
        found.append(
            f"{missing} of {want_outputs} outputs missing"
            if missing > 0
            else f"{-missing} output(s) more than the source's {want_outputs}"
        )
    return found
