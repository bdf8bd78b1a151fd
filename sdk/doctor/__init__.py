"""The quantization doctor: which layers int8 hurts, why, and a mixed-precision artifact that fits.

    >>> from edgeship.doctor import diagnose
    >>> report = diagnose("out", data="digits", max_drop=1.0)             # doctest: +SKIP
    >>> [(l.name, round(l.sqnr_db, 1)) for l in report.artifacts[0].layers[:3]]  # doctest: +SKIP

For each int8 artifact of a converted folder (``run.py`` holds the flow):

1. **per-layer error** — the float and the int8 model run side by side on test samples, layer by
   layer, and every quantized tensor is scored by SQNR, worst first. One module per format
   probes its artifacts (``tflite.py``: TFLite's QuantizationDebugger; ``onnx.py``: intermediate
   outputs of the QDQ model); ``layers.py`` holds the running sums and the ranking;
2. **advice** (``advice.py``) — outlier-dominated ranges, too few calibration samples, calibration
   inputs that do not look like the training inputs;
3. **recovery** (``recovery.py``, with ``max_drop``) — the worst layers are kept in float one at a
   time, each alone or with the layers that read its output, until the accuracy drop against the
   float reference fits; that artifact is written beside the others and registered in
   manifest.json.

Everything lands in ``doctor.json`` (a DoctorReport, ``records.py``: the data model, which imports
none of the other parts). A new format is one probe module plus one line in ``run.PROBES``.
"""

from __future__ import annotations

from edgeship.doctor.records import Advice, Diagnosis, DoctorReport, LayerError, Recovery, RecoveryStep
from edgeship.doctor.run import DOCTORED, diagnose

__all__ = ["diagnose", "DoctorReport", "Diagnosis", "LayerError", "Advice", "Recovery", "RecoveryStep", "DOCTORED"]
