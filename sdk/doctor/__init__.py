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
3. **recovery** (``recovery.py``, with ``max_drop``) — cheapest fix first: recalibration,
   cross-layer equalization (``edgeship.converters.equalize``), then layers kept in float (ranked
   by the accuracy each recovers alone), until the accuracy drop against the float reference fits
   on the validation split; that artifact is scored on the test split, written beside the others
   as ``<precision>-<method>``, registered in manifest.json, and its float ops are read back from
   the file (``readback.py``);
4. **margins** (``margins.py``) — agreement with float by the float model's top-2 margin, which
   tells ambiguous inputs (the float model is unsure; int8 flips them first) from a damaged layer
   (int8 flips confident inputs too); advice names which.

Everything lands in ``doctor.json`` (a DoctorReport, ``records.py``: the data model, which imports
none of the other parts). A new format is one probe module (``edgeship.formats.DoctorProbe``) named by its ``Format``.
"""

from __future__ import annotations

from edgeship.doctor.records import (
    Advice,
    Diagnosis,
    DoctorReport,
    LayerError,
    MarginBin,
    Margins,
    Recovery,
    RecoveryStep,
)
from edgeship.doctor.recovery import NO_VAL
from edgeship.doctor.run import diagnose, doctored

__all__ = [
    "diagnose",
    "DoctorReport",
    "Diagnosis",
    "LayerError",
    "Advice",
    "Margins",
    "MarginBin",
    "Recovery",
    "RecoveryStep",
    "doctored",
    "NO_VAL",
]
