"""Converters: one module per format, one registry, one ``convert`` that writes a manifest.

    >>> from edgeship.converters import convert
    >>> manifest = convert("out/model", ["tflite:int8", "onnx:fp32", "coreml:fp16"],
    ...                    data="digits", out="out")                       # doctest: +SKIP

A target is ``format:precision``; ``FORMATS`` (``edgeship.formats``) names each format's converter
module, whose ``PRECISIONS`` lists what it makes. Adding a format is a converter module (the
``Converter`` contract of ``edgeship.formats``), its runtime, and one line in ``FORMATS``. What is
converted comes from a ``Source`` plugin (``_source.SOURCES``: Keras, SavedModel, Keras 3, ONNX),
which also writes and runs the float reference every artifact is checked against (``reference``).
The contracts and a recipe for each: docs/architecture.md.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeship.converters import _check, _notes
from edgeship.errors import BadInputError, ConversionError, EdgeshipError, UnsupportedModelError
from edgeship.formats import FORMATS, Converter
from edgeship.records import Artifact, Manifest

if TYPE_CHECKING:
    from edgeship.converters._source import SourceModel
    from edgeship.data import Dataset

log = logging.getLogger(__name__)

__all__ = ["convert", "FORMATS", "parse_targets", "precisions"]


def backend(fmt: str) -> Converter:
    """The converter module of format ``fmt``."""
    if fmt not in FORMATS:
        raise BadInputError(f"unknown format '{fmt}'; edgeship converts to {sorted(FORMATS)}")
    return FORMATS.get(fmt).converter_module()


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
    preprocess: str | None = None,
    input_shape: Sequence[int] | None = None,
    task: str | None = None,
    example: Any = None,
) -> Manifest:
    """Convert ``model`` to every target and record each Artifact in ``out/manifest.json``.

        >>> manifest = convert("out/model", "tflite:int8,onnx:int8", data="digits", out="out")  # doctest: +SKIP
        >>> [(a.name, a.path, a.size_bytes) for a in manifest.artifacts]                     # doctest: +SKIP

    ``data`` (a Dataset or its name) supplies calibration samples and is recorded by fingerprint;
    ``calibration`` overrides the samples. ``options`` maps a target (``"onnx:int8"``) or a format
    (``"onnx"``) to backend keyword options, e.g. ``{"onnx:int8": {"calibrate_method": "entropy"}}``.
    ``trust_code`` allows loading model files with Lambda layers (their stored Python code runs).
    ``preprocess`` is the spec that turns the stored arrays of ``data`` into model inputs
    (``edgeship.data.preprocess``; default: ``unit`` for integer images, else ``none``); it is recorded
    with the data's path, so validate, doctor and report find the same data again.
    ``input_shape`` fixes dimensions the model leaves open (default: the data's sample shape).
    ``task`` fixes what the outputs mean (``edgeship.tasks``) where detection would guess.
    ``example`` (a PyTorch model's example inputs, batch 1: a tensor or array, or a tuple of them)
    fixes the input shapes of a model that carries none (default: the first test sample of ``data``).
    ``model`` may be a PyTorch ``nn.Module`` (in eval mode), a ``torch.export`` program or a ``.pt2``
    file (``pip install 'edgeship[torch]'``; ``converters/_torch.py``).
    Each artifact is written under a temporary name and renamed, and the manifest is rewritten
    after each one, so an interruption leaves only complete artifacts.
    """
    from edgeship.converters._source import resolve
    from edgeship.data import Dataset, load_dataset
    from edgeship.tasks import parse_task

    parsed = parse_targets(targets)
    task = parse_task(task)
    out = Path(out)
    if isinstance(data, Dataset) and preprocess is not None:
        raise BadInputError(
            "preprocess applies to data loaded by name or path; a Dataset is already preprocessed: "
            "pass preprocess= to load_dataset instead"
        )
    dataset = load_dataset(data, preprocess=preprocess) if isinstance(data, (str, Path)) else data
    if example is None and isinstance(dataset, Dataset) and len(dataset.inputs("test")[0]):
        example = tuple(np.asarray(a[:1]) for a in dataset.inputs("test"))  # what a PyTorch model is traced on
    source = resolve(model, name, trust_code=trust_code, example=example)
    if dataset is None or isinstance(dataset, Dataset):  # an array given as data is calibration only
        source, dataset = _fit(source, dataset, input_shape)
    from edgeship import _io

    with _io.transaction(out, lambda: Manifest.recorded_names(out)) as removed:
        for name in removed:
            log.info("removed %s, left by an interrupted run", name)
        manifest = _start_manifest(out, source, dataset, task)
        stored = _store_reference_outputs(out, manifest, dataset, trust_code) if isinstance(dataset, Dataset) else None
        # the first test samples and the float model's outputs on them: each artifact is checked on them
        probe = (
            ([a[: _check.SAMPLES] for a in dataset.inputs("test")], [o[: _check.SAMPLES] for o in stored])
            if stored and isinstance(dataset, Dataset)
            else (None, None)
        )
        calibration = calibration if calibration is not None else dataset
        refused: list[str] = []
        failed: list[tuple[str, EdgeshipError, Exception]] = []
        for fmt, precision in parsed:
            opts = {**(options or {}).get(fmt, {}), **(options or {}).get(f"{fmt}:{precision}", {})}
            manifest = _forget(out, manifest, f"{fmt}:{precision}")
            log.info("converting %s to %s:%s", source.name, fmt, precision)
            try:
                with _notes.collect() as notes:  # warnings about the model; C++ chatter ("fully_quantize: 0, …")
                    artifact = backend(fmt).convert(source, out, precision=precision, calibration=calibration, **opts)
                artifact = _checked(out, artifact, source, getattr(backend(fmt), "CHECK_TOLERANCE", {}), *probe)
            except UnsupportedModelError as exc:  # this format cannot take the model; the others may
                log.info("%s:%s refused: %s", fmt, precision, exc)
                refused.append(f"{fmt}:{precision}: {exc}")
                continue
            except Exception as exc:  # one target failing never stops the others: said once at the end
                error = (
                    exc
                    if isinstance(exc, EdgeshipError)
                    else ConversionError(
                        f"converting {source.name} to {fmt}:{precision} failed: {type(exc).__name__}: {exc}"
                    )
                )
                log.warning("%s:%s failed: %s", fmt, precision, error)
                failed.append((f"{fmt}:{precision}", error, exc))
                continue
            artifact = _with_metadata(out, artifact, dataset, task)
            if notes:
                artifact = dataclasses.replace(artifact, notes=tuple(notes))
                for note in notes:
                    log.info("%s: %s", artifact.name, note)
            manifest = manifest.with_artifact(artifact)
            manifest.save(out)
            if on_artifact:
                on_artifact(artifact)
        made = [f"{f}:{p}" for f, p in parsed if any(a.name == f"{f}:{p}" for a in manifest.artifacts)]
        done = f"made {', '.join(made)} in {out}; " if made else ""
        if failed:
            said = "; ".join(f"{name} failed: {error}" for name, error, _ in failed)
            also = f"; refused {'; '.join(refused)}" if refused else ""
            kinds = {type(error) for _, error, _ in failed}
            if len(failed) == 1 and not refused and not made:  # the one target asked for: its own error
                raise failed[0][1] from (failed[0][2] if failed[0][2] is not failed[0][1] else None)
            # nothing made and one kind of error (missing data, a missing package): that kind, all said
            kind = kinds.pop() if len(kinds) == 1 and not made and not refused else ConversionError
            raise kind(f"{done}{said}{also}") from failed[0][2]
        if refused:
            raise UnsupportedModelError(f"{done}refused {'; '.join(refused)}. {_formats_that_take(source, refused)}")
        return manifest


def _store_reference_outputs(out: Path, manifest: Manifest, dataset: Dataset, trust_code: bool) -> list[Any] | None:
    """The float outputs on the validation and test splits, computed while TensorFlow and the data
    are at hand, so that validate on the same data needs neither; the test split's are returned."""
    from edgeship.converters import reference

    try:
        splits = {
            s: reference.compute_outputs(out, manifest, dataset, s, trust_code=trust_code)
            for s in reference.splits_of(dataset)
        }
        reference.store_outputs(out, manifest, dataset, splits)
    except EdgeshipError as exc:  # validate computes them itself then; the artifacts matter more
        log.warning("float outputs not stored (validate will compute them): %s", exc)
        return None
    return splits.get("test")


def _checked(
    out: Path, artifact: Artifact, source: SourceModel, tolerances: dict[str, float], inputs: Any, reference: Any
) -> Artifact:
    """``artifact`` once its file is known to match ``source`` (``_check``); else the file is
    removed and a ConversionError says what differed."""
    from edgeship import _io

    path = out / artifact.path
    from edgeship.runtimes._session import in_layout

    fed = in_layout(inputs, artifact.settings.get("layout")) if inputs is not None else None
    found = _check.problems(path, source, artifact.precision, tolerances, fed, reference)
    if found:
        _io.remove(path)
        raise ConversionError(
            f"{artifact.name}: the file written does not match {source.name}, so it was not "
            f"recorded: {'; '.join(found)}"
        )
    return artifact


def _with_metadata(out: Path, artifact: Artifact, dataset: Dataset | None, task: str | None) -> Artifact:
    """Write the preprocessing spec, class names and task into the artifact file itself."""
    from edgeship import _io
    from edgeship.converters import _metadata

    if dataset is None or not hasattr(dataset, "options"):
        return artifact
    meta = {
        # the one record of the preprocessing: its canonical spec, which the runtime applies on a device
        "preprocess": dataset.options.get("preprocess", "") or "none",
        "classes": list(dataset.classes),
        "task": task or "",
        "dataset": dataset.name,
    }
    path = out / artifact.path
    _metadata.embed(path, artifact.format, meta)
    written = _metadata.read(path, artifact.format)  # the record says what the file holds, read back
    return dataclasses.replace(
        artifact,
        sha256=_io.sha256_path(path),
        size_bytes=_io.size_bytes(path),
        settings={**artifact.settings, "metadata": written},
    )


def _forget(out: Path, manifest: Manifest, name: str) -> Manifest:
    """Drop ``name``'s record and file before it is made again, so that no moment of the conversion
    has a record that disagrees with its file (the manifest is saved first)."""
    from edgeship import _io

    if not any(a.name == name for a in manifest.artifacts):
        return manifest
    old = out / manifest.get(name).path
    manifest = manifest.without(name)
    manifest.save(out)
    _io.remove(old)
    return manifest


def _formats_that_take(source: SourceModel, refused: list[str]) -> str:
    """Try the other formats' float conversion in a scratch folder and say which take the model."""
    import tempfile

    failed = {item.split(":")[0] for item in refused}
    takes = []
    with tempfile.TemporaryDirectory(prefix="edgeship-probe-") as tmp:
        for fmt in FORMATS:
            if fmt in failed or not source.can_become(fmt):
                continue
            precision = next(iter(precisions(fmt)))
            try:
                with _notes.collect():
                    backend(fmt).convert(source, Path(tmp), precision=precision)
                takes.append(f"{fmt}:{precision}")
            except Exception:  # a probe: any failure means "does not take it"
                continue
    if takes:
        return f"Formats that do take this model: {', '.join(takes)}"
    return "No other format takes this model either: replace the op with supported layers"


def _fit(
    source: SourceModel, dataset: Dataset | None, input_shape: Sequence[int] | None
) -> tuple[SourceModel, Dataset | None]:
    """The model with open dimensions fixed and the data shaped as the model takes it, or a
    BadInputError saying how they differ."""
    if input_shape is not None:
        source = source.with_input_shape(tuple(input_shape), "--input-shape")
    if len(source.input_specs) > 1 or (dataset is not None and len(dataset.input_shapes) > 1):
        want = [shape for shape, _ in source.input_specs]
        have = list(dataset.input_shapes) if dataset is not None else want
        if have != want and dataset is not None:
            raise BadInputError(
                f"the model takes {len(want)} input(s) of shapes {want} but dataset "
                f"'{dataset.name}' has {len(have)} of shapes {have}; in a .npz name them x_train_0, "
                "x_train_1, … (and x_test_…) in the order of the model's inputs"
            )
        return source, dataset
    if dataset is None:
        if source.dynamic:
            raise BadInputError(
                f"{source.name} leaves input dimensions open {source.input_shape}: pass data (its "
                "samples fix them) or input_shape (--input-shape H,W,C)"
            )
        return source, dataset
    data_shape = tuple(dataset.input_shape)
    if source.dynamic:
        return source.with_input_shape(data_shape, f"the samples of '{dataset.name}'"), dataset
    if data_shape + (1,) == tuple(source.input_shape):
        return source, dataset.with_channel_axis()
    if data_shape != tuple(source.input_shape):
        hint = (
            " The model takes channels first: add --preprocess layout=nchw (and the scaling it was trained with)"
            if sorted(data_shape) == sorted(source.input_shape) and data_shape[-1:] == source.input_shape[:1]
            else " Convert with the data the model was trained on"
        )
        raise BadInputError(
            f"the model takes inputs of shape {tuple(source.input_shape)} but dataset "
            f"'{dataset.name}' has samples of shape {data_shape}.{hint}"
        )
    return source, dataset


def _start_manifest(out: Path, source: SourceModel, dataset: Dataset | None, task: str | None) -> Manifest:
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
    path = getattr(dataset, "path", "")
    if path and Path(path).resolve().is_relative_to(out.resolve()):
        path = Path(path).resolve().relative_to(out.resolve()).as_posix()
    manifest = Manifest(
        model=source.name,
        dataset=getattr(dataset, "name", manifest.dataset),
        dataset_fingerprint=fingerprint or manifest.dataset_fingerprint,
        reference=reference.write(source, out),
        artifacts=manifest.artifacts,
        data_path=path if dataset is not None else manifest.data_path,
        data_options=dict(getattr(dataset, "options", {})) if dataset is not None else manifest.data_options,
        task=task or manifest.task,
    )
    manifest.save(out)
    return manifest
