"""Converters: one module per format, one registry, one ``convert`` that writes a manifest.

    >>> from edgeship.converters import convert
    >>> manifest = convert("out/model", ["tflite:int8", "onnx:fp32", "coreml:fp16"],
    ...                    data="digits", out="out")                       # doctest: +SKIP

A target is ``format:precision``; ``FORMATS`` maps each format to its module and the module's
``PRECISIONS`` lists what it makes. Adding a format is one module plus one line here.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable

from edgeship.converters import _notes
from edgeship.errors import BadInputError, ConversionError, EdgeshipError, UnsupportedModelError
from edgeship.records import Artifact, Manifest

log = logging.getLogger(__name__)

__all__ = ["convert", "FORMATS", "parse_targets", "precisions"]

FORMATS: dict[str, str] = {
    "tflite": "edgeship.converters.tflite",
    "onnx": "edgeship.converters.onnx",
    "coreml": "edgeship.converters.coreml",
}


def backend(fmt: str) -> ModuleType:
    if fmt not in FORMATS:
        raise BadInputError(f"unknown format '{fmt}'; edgeship converts to {sorted(FORMATS)}")
    return importlib.import_module(FORMATS[fmt])


def precisions(fmt: str) -> dict[str, str]:
    """The precisions ``fmt`` makes, each with a one-line description."""
    return dict(backend(fmt).PRECISIONS)


def parse_targets(targets: str | Iterable[str]) -> list[tuple[str, str]]:
    """``"tflite:fp32,onnx:int8"`` (or a list of such) -> [("tflite", "fp32"), ("onnx", "int8")]."""
    items = targets.split(",") if isinstance(targets, str) else list(targets)
    parsed = []
    for item in (t.strip() for t in items):
        if not item:
            continue
        fmt, _, precision = item.partition(":")
        known = precisions(fmt)
        precision = precision or next(iter(known))
        if precision not in known:
            raise BadInputError(f"'{fmt}' has no precision '{precision}'; choose one of {sorted(known)}")
        if (fmt, precision) not in parsed:
            parsed.append((fmt, precision))
    if not parsed:
        raise BadInputError(f"no targets given; name some as format:precision, e.g. tflite:int8 (received {targets!r})")
    return parsed


def convert(
    model: Any,
    targets: str | Iterable[str],
    *,
    out: str | Path,
    data: Any = None,
    calibration: Any = None,
    name: str | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    on_artifact: Callable[[Artifact], None] | None = None,
    trust_code: bool = False,
) -> Manifest:
    """Convert ``model`` to every target and record each Artifact in ``out/manifest.json``.

        >>> manifest = convert("out/model", "tflite:int8,onnx:int8", data="digits", out="out")  # doctest: +SKIP
        >>> [(a.name, a.path, a.size_bytes) for a in manifest.artifacts]                     # doctest: +SKIP

    ``data`` (a Dataset or its name) supplies calibration samples and is recorded by fingerprint;
    ``calibration`` overrides the samples. ``options`` maps a target (``"onnx:int8"``) or a format
    (``"onnx"``) to backend keyword options, e.g. ``{"onnx:int8": {"calibrate_method": "entropy"}}``.
    ``trust_code`` allows loading model files with Lambda layers (their stored Python code runs).
    Each artifact is written under a temporary name and renamed, and the manifest is rewritten
    after each one, so an interruption leaves only complete artifacts.
    """
    from edgeship.converters._source import resolve
    from edgeship.datasets import Dataset, load_dataset

    parsed = parse_targets(targets)
    out = Path(out)
    dataset = load_dataset(data) if isinstance(data, str) else data
    source = resolve(model, name, trust_code=trust_code)
    if dataset is not None and isinstance(dataset, Dataset) and tuple(dataset.input_shape) != source.input_shape:
        raise BadInputError(
            f"the model takes inputs of shape {source.input_shape} but dataset '{dataset.name}' has samples of "
            f"shape {tuple(dataset.input_shape)}; convert with the dataset the model was trained on"
        )
    _remove_partials(out)
    manifest = _start_manifest(out, source, dataset)
    calibration = calibration if calibration is not None else dataset
    for fmt, precision in parsed:
        opts = {**(options or {}).get(fmt, {}), **(options or {}).get(f"{fmt}:{precision}", {})}
        log.info("converting %s to %s:%s", source.name, fmt, precision)
        try:
            with _notes.collect() as notes:  # warnings about the model; C++ chatter ("fully_quantize: 0, …")
                artifact = backend(fmt).convert(source, out, precision=precision, calibration=calibration, **opts)
        except UnsupportedModelError as exc:
            raise UnsupportedModelError(f"{exc}. {_formats_that_take(source, fmt)}") from exc
        except EdgeshipError:
            raise
        except Exception as exc:  # a converter's own exception: wrap it, keep the cause
            raise ConversionError(f"converting {source.name} to {fmt}:{precision} failed: {type(exc).__name__}: {exc}") from exc
        if notes:
            artifact = dataclasses.replace(artifact, notes=tuple(notes))
            for note in notes:
                log.info("%s: %s", artifact.name, note)
        manifest = manifest.with_artifact(artifact)
        manifest.save(out)
        if on_artifact:
            on_artifact(artifact)
    return manifest


def _remove_partials(out: Path) -> None:
    """Clear what an interrupted conversion left under temporary names (one conversion per folder)."""
    import shutil

    for stale in out.glob(".*.partial-*"):
        log.info("removing %s, left by an interrupted conversion", stale.name)
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


def _formats_that_take(source: Any, failed: str) -> str:
    """Try the other formats' float conversion in a scratch folder and say which take the model."""
    import tempfile

    takes = []
    with tempfile.TemporaryDirectory(prefix="edgeship-probe-") as tmp:
        for fmt in FORMATS:
            if fmt == failed or source.kind == "onnx":
                continue
            precision = next(iter(precisions(fmt)))
            try:
                backend(fmt).convert(source, Path(tmp), precision=precision)
                takes.append(f"{fmt}:{precision}")
            except Exception:  # a probe: any failure means "does not take it"
                continue
    if takes:
        return f"Formats that do take this model: {', '.join(takes)}"
    return "No other format takes this model either: replace the op with supported layers"


def _start_manifest(out: Path, source: Any, dataset: Any) -> Manifest:
    from edgeship.converters import reference

    fingerprint = dataset.fingerprint if dataset is not None and hasattr(dataset, "fingerprint") else ""
    if (out / Manifest.file_name).exists():
        manifest = Manifest.load(out)
        if manifest.model != source.name or (fingerprint and manifest.dataset_fingerprint not in ("", fingerprint)):
            raise BadInputError(
                f"{out} already holds artifacts of model '{manifest.model}' on dataset '{manifest.dataset}'; "
                f"received model '{source.name}' on '{getattr(dataset, 'name', '')}'. Use another --out folder"
            )
    else:
        manifest = Manifest(model=source.name)
    manifest = Manifest(
        model=source.name,
        dataset=getattr(dataset, "name", manifest.dataset),
        dataset_fingerprint=fingerprint or manifest.dataset_fingerprint,
        reference=reference.write(source, out),
        artifacts=manifest.artifacts,
    )
    manifest.save(out)
    return manifest

