"""The thin runtime: loading, specs, float <-> int8 I/O, raw mode, batch resizing, refusals, backends."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from importlib import metadata

import numpy as np
import pytest

from edgeship import runtimes
from edgeship.errors import BadArtifactError, BadInputError, MissingDependencyError
from edgeship.runtimes import load, runtime_for

RUNNABLE = ["tiny_cnn.fp32.tflite", "tiny_cnn.int8.tflite", "tiny_cnn.fp32.onnx", "tiny_cnn.int8.onnx"]


@pytest.fixture(scope="module")
def keras_reference(quickstart_dir):
    """The bundle's inputs and what the Keras float model (not any runtime) makes of them."""
    from edgeship import bundle
    from edgeship.trainers.saving import load_keras

    _, (inputs,), labels = bundle.load(quickstart_dir / "bundle")
    return inputs, load_keras(quickstart_dir / "reference" / "model.keras").predict(inputs, verbose=0)


@pytest.fixture(scope="module")
def backend_outputs(quickstart_dir, keras_reference):
    return {name: load(quickstart_dir / name, threads=1).predict(keras_reference[0]) for name in RUNNABLE}


@pytest.mark.parametrize("name", RUNNABLE)
def test_each_backend_matches_the_keras_float_model(quickstart_dir, keras_reference, backend_outputs, name):
    session = load(quickstart_dir / name, threads=1)
    assert session.runtime == runtime_for(name)  # the backend module names its runtime
    assert session.inputs[0].shape[1:] == (8, 8, 1) and session.outputs[0].shape[-1] == 10
    _, expected = keras_reference
    outputs = backend_outputs[name]
    assert outputs.dtype == np.float32  # callers speak float, even to int8 I/O models
    error = np.abs(outputs - expected)
    if ".fp32." in name:  # measured: 2.0e-6 (TFLite), 8.6e-7 (ONNX Runtime)
        assert error.max() < 6e-6
    else:  # measured: top-1 agreement 64/64, mean abs error 3.2e-3 (TFLite) and 3.3e-3 (ONNX), max 0.32
        assert np.mean(outputs.argmax(1) == expected.argmax(1)) >= 63 / 64 and error.mean() < 8e-3


def test_the_two_int8_backends_agree_with_each_other(backend_outputs):
    # different converters, different runtimes, one QAT model: measured max abs 0.043 (11 steps of 1/256)
    tflite, onnx = backend_outputs["tiny_cnn.int8.tflite"], backend_outputs["tiny_cnn.int8.onnx"]
    assert np.abs(tflite - onnx).max() < 0.1 and np.mean(tflite.argmax(1) == onnx.argmax(1)) >= 63 / 64


def test_int8_io_quantizes_inputs_and_dequantizes_outputs(quickstart_dir):
    session = load(quickstart_dir / "tiny_cnn.int8.tflite")
    spec_in, spec_out = session.inputs[0], session.outputs[0]
    assert spec_in.dtype == "int8" and spec_in.quantized and spec_out.quantized
    x = np.random.default_rng(0).random((3, 8, 8, 1), dtype=np.float32) * 3
    q = np.clip(np.round(x / spec_in.scale) + spec_in.zero_point, -128, 127).astype(np.int8)
    raw = session.run({spec_in.name: q}, raw=True)[spec_out.name]
    assert raw.dtype == np.int8
    floats = session.run({spec_in.name: x})[spec_out.name]
    np.testing.assert_array_equal(floats, (raw.astype(np.float32) - spec_out.zero_point) * np.float32(spec_out.scale))


def test_raw_mode_refuses_floats_for_an_int8_model(quickstart_dir):
    session = load(quickstart_dir / "tiny_cnn.int8.tflite")
    with pytest.raises(BadInputError, match=r"expects dtype int8 \(raw mode.*received float32"):
        session.run(np.zeros((1, 8, 8, 1), np.float32), raw=True)


@pytest.mark.parametrize("name", ["tiny_cnn.int8.tflite", "tiny_cnn.fp32.onnx"])
def test_wrong_inputs_are_refused_before_the_interpreter_sees_them(quickstart_dir, name):
    session = load(quickstart_dir / name)
    input_name = session.inputs[0].name
    with pytest.raises(BadInputError) as wrong_name:
        session.run({"pixels": np.zeros((1, 8, 8, 1), np.float32)})
    assert input_name in str(wrong_name.value) and "[N, 8, 8, 1]" in str(wrong_name.value) and "pixels" in str(wrong_name.value)
    with pytest.raises(BadInputError, match=re.escape("expects shape [N, 8, 8, 1]") + r".*received shape \[2, 9, 8, 1\]"):
        session.run(np.zeros((2, 9, 8, 1), np.float32))
    with pytest.raises(BadInputError, match=r"received shape \[8, 8, 1\]"):
        session.run(np.zeros((8, 8, 1), np.float32))
    with pytest.raises(BadInputError, match=r"expects dtype .*received <U1"):
        session.run(np.full((1, 8, 8, 1), "a"))
    with pytest.raises(BadInputError, match=r"takes 1 inputs .*received 2 arrays"):
        session.run([np.zeros((1, 8, 8, 1), np.float32)] * 2)
    # the refused shapes never reached the interpreter: a good call still runs at batch 1
    assert session.run(np.zeros((1, 8, 8, 1), np.float32))[session.outputs[0].name].shape == (1, 10)


def test_litert_interpreter_is_untouched_by_a_refused_shape(quickstart_dir):
    session = load(quickstart_dir / "tiny_cnn.fp32.tflite")
    before = session.interpreter.get_input_details()[0]["shape"].tolist()
    with pytest.raises(BadInputError):
        session.run(np.zeros((4, 8, 9, 1), np.float32))
    assert session.interpreter.get_input_details()[0]["shape"].tolist() == before


@pytest.mark.parametrize("name", ["tiny_cnn.int8.tflite", "tiny_cnn.fp32.onnx"])
def test_batch_size_changes_between_calls(quickstart_dir, name):
    session = load(quickstart_dir / name)
    assert session.dynamic_batch
    x = np.random.default_rng(1).random((5, 8, 8, 1), dtype=np.float32)
    out_name = session.outputs[0].name
    whole = session.run(x)[out_name]
    singles = np.concatenate([session.run(x[i : i + 1])[out_name] for i in range(5)])
    again = session.run(x[:3])[out_name]
    assert whole.shape == (5, 10) and again.shape == (3, 10)
    np.testing.assert_allclose(whole, singles, atol=1e-5)
    np.testing.assert_allclose(again, whole[:3], atol=1e-5)


def test_onnxruntime_options_are_selectable(quickstart_dir):
    path = quickstart_dir / "tiny_cnn.fp32.onnx"
    x = np.random.default_rng(2).random((4, 8, 8, 1), dtype=np.float32)
    plain = load(path, optimization="disable", providers=["CPUExecutionProvider"]).predict(x)
    optimized = load(path, optimization="all", threads=2).predict(x)
    np.testing.assert_allclose(plain, optimized, atol=1e-5)
    with pytest.raises(BadInputError, match=r"optimization must be one of .*'extended'.*received 'max'"):
        load(path, optimization="max")
    with pytest.raises(BadInputError, match=r"providers \['NoSuchExecutionProvider'\] are not available here; available: \[.*CPUExecutionProvider"):
        load(path, providers=["NoSuchExecutionProvider"])


def test_bad_paths_and_settings_are_refused(quickstart_dir, tmp_path):
    with pytest.raises(BadInputError, match=r"no runtime for 'model.pt'.*\.mlpackage.*\.onnx.*\.tflite.*'.pt'"):
        load(tmp_path / "model.pt")
    with pytest.raises(BadArtifactError, match="no model file"):
        load(tmp_path / "missing.tflite")
    fake = tmp_path / "fake.tflite"
    fake.write_bytes(b"\x00" * 64)
    with pytest.raises(BadArtifactError, match="not a TFLite model.*TFL3"):
        load(fake)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a protobuf")
    with pytest.raises(BadArtifactError, match="not a valid ONNX model|could not be loaded by onnxruntime"):
        load(broken)
    with pytest.raises(BadInputError, match="threads must be a positive integer; received 0"):
        load(quickstart_dir / "tiny_cnn.fp32.tflite", threads=0)


def test_litert_says_when_no_interpreter_imports(quickstart_dir, monkeypatch):
    for module in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime", "tflite_runtime.interpreter",
                   "tensorflow", "tensorflow.lite"):
        monkeypatch.setitem(sys.modules, module, None)  # None in sys.modules makes the import fail
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgeship\[litert\]'"):
        load(quickstart_dir / "tiny_cnn.fp32.tflite")


@pytest.mark.slow
def test_litert_falls_back_to_tf_lite_and_says_so(quickstart_dir):
    # ai-edge-litert blocked, tflite_runtime not installed here: the third choice, tf.lite, runs it
    code = (
        "import sys, logging; sys.modules['ai_edge_litert'] = None; logging.basicConfig(level=logging.WARNING);"
        "import numpy as np, edgeship.runtimes as rt;"
        f"s = rt.load({str(quickstart_dir / 'tiny_cnn.fp32.tflite')!r});"
        "print(s.runtime, s.run(np.zeros((1, 8, 8, 1), np.float32))[s.outputs[0].name].shape)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["tf.lite", "(1,", "10)"]
    assert "ai-edge-litert is not installed; running .tflite with tf.lite" in proc.stderr


def test_runtime_modules_import_no_heavy_package():
    code = ("import sys, edgeship.runtimes, edgeship.runtimes.benchmark, edgeship.runtimes.targets, "
            "edgeship.runtimes._device_check, edgeship.runtimes._profile, edgeship.bundle;"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'tf_keras', 'onnxruntime', 'ai_edge_litert', 'onnx', 'coremltools', 'sklearn')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # interpreters are imported by the backend that loads a model, not before


def _closure(requirement: str, seen: set[str]) -> set[str]:
    """Installed distributions a requirement pulls in, following extras and markers."""
    from packaging.requirements import Requirement

    req = Requirement(requirement)
    name = req.name.lower().replace("_", "-")
    key = f"{name}[{','.join(sorted(req.extras))}]"
    if key in seen:
        return seen
    seen.add(key)
    try:
        requires = metadata.requires(req.name) or []
    except metadata.PackageNotFoundError:
        return seen
    for line in requires:
        dep = Requirement(line)
        environment = [{"extra": e} for e in req.extras] or [{"extra": ""}]
        if dep.marker is None or any(dep.marker.evaluate(env) for env in environment):
            _closure(str(dep).split(";")[0], seen)
    return seen


@pytest.mark.parametrize("extra", ["litert", "onnx"])
def test_device_install_pulls_no_tensorflow(extra):
    names = {k.split("[")[0] for k in _closure(f"edgeship[{extra}]", set())}
    interpreter = {"litert": "ai-edge-litert", "onnx": "onnxruntime"}[extra]
    assert {"numpy", interpreter} <= names
    assert not {n for n in names if n.startswith(("tensorflow", "tf-keras", "keras"))}, names


def test_registry_is_complete():
    from edgeship.formats import FORMATS

    for fmt in FORMATS.all():
        for item in fmt.runtimes:
            backend = __import__(item.module, fromlist=["load"])
            assert callable(backend.load), (fmt.name, item.name)
    assert set(runtimes.__all__) <= set(dir(runtimes))


def test_litert_logs_nothing_when_litert_is_present(quickstart_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="edgeship.runtimes.litert"):
        assert load(quickstart_dir / "tiny_cnn.int8.tflite").runtime == "litert"
    assert not caplog.records


def _reference_quantize(x, scale, zero_point, dtype):
    """The plain numpy conversion the buffered one replaced: same float32 steps, fresh arrays."""
    info = np.iinfo(dtype)
    q = np.divide(x, np.float32(scale), dtype=np.float32)
    np.rint(q, out=q)
    np.add(q, np.float32(zero_point), out=q)
    np.minimum(q, np.float32(info.max), out=q)
    np.maximum(q, np.float32(info.min), out=q)
    return q.astype(dtype)


def _reference_dequantize(y, scale, zero_point):
    out = y.astype(np.float32)
    np.subtract(out, np.float32(zero_point), out=out)
    np.multiply(out, np.float32(scale), out=out)
    return out


@pytest.mark.parametrize("dtype, zero_point", [(np.int8, -5), (np.int8, 0), (np.uint8, 128)])
@pytest.mark.parametrize("scale", [0.0039, 0.02, 1.7])
def test_buffered_io_conversion_is_bit_identical_to_plain_numpy(dtype, zero_point, scale):
    from edgeship.runtimes._session import _Dequantizer, _Quantizer

    rng = np.random.default_rng(7)
    quantize, dequantize = _Quantizer(scale, zero_point, np.dtype(dtype)), _Dequantizer(scale, zero_point, np.dtype(dtype))
    for shape in [(1, 8, 8, 1), (4, 8, 8, 1), (1, 8, 8, 1), (2, 3000)]:  # a shape seen again reuses its buffers
        x = (rng.standard_normal(shape) * 300 * scale).astype(np.float32)  # far beyond the int8 range too
        x.flat[:5] = [np.inf, -np.inf, 0.5 * scale, 2.5 * scale, -0.5 * scale]  # infinities and ties
        for given in (x, x.astype(np.float64)):
            np.testing.assert_array_equal(quantize(given), _reference_quantize(given, scale, zero_point, dtype))
        info = np.iinfo(dtype)
        y = rng.integers(info.min, info.max + 1, shape).astype(dtype)
        out = dequantize(y)
        assert out.dtype == np.float32 and out.shape == y.shape
        assert np.array_equal(out.view(np.int32), _reference_dequantize(y, scale, zero_point).view(np.int32))


def test_run_returns_fresh_outputs_and_model_inputs_are_copies(quickstart_dir):
    session = load(quickstart_dir / "tiny_cnn.int8.tflite")
    name = session.inputs[0].name
    a, b = (np.random.default_rng(s).random((1, 8, 8, 1), dtype=np.float32) for s in (1, 2))
    first = session.run({name: a})[session.outputs[0].name]
    kept = first.copy()
    raw = session.model_inputs({name: a})
    session.run({name: b})
    np.testing.assert_array_equal(first, kept)  # a later call does not write into an earlier result
    assert raw[name].dtype == np.int8
    np.testing.assert_array_equal(raw[name], _reference_quantize(a, session.inputs[0].scale, session.inputs[0].zero_point,
                                                                 np.int8))
    assert session.model_dtypes() == "int8" and load(quickstart_dir / "tiny_cnn.fp32.tflite").model_dtypes() == "float32"


@pytest.mark.parametrize("name", ["tiny_cnn.fp32.onnx", "tiny_cnn.int8.tflite"])
def test_the_timed_raw_call_runs_what_it_is_given(quickstart_dir, name):
    """What benchmarks time: the list raw_call returned (ONNX feeds a dict built once), its arrays
    rewritten in place, and any other list, all give run()'s outputs for those inputs."""
    session = load(quickstart_dir / name)
    a, b = (np.random.default_rng(s).random((1, 8, 8, 1), dtype=np.float32) for s in (1, 2))
    call, arrays = session.raw_call({session.inputs[0].name: a})
    expected = {x.tobytes(): session.run({session.inputs[0].name: x}, raw=False) for x in (a, b)}
    first = call(arrays)[0].copy()
    arrays[0][...] = session.model_inputs({session.inputs[0].name: b})[session.inputs[0].name]
    second = call(arrays)[0].copy()
    other = call(list(session.model_inputs({session.inputs[0].name: a}).values()))[0]
    np.testing.assert_array_equal(other, first)
    assert not np.array_equal(first, second)
    out = session.outputs[0].name
    if not session.outputs[0].quantized:
        np.testing.assert_allclose(first, expected[a.tobytes()][out], rtol=1e-6)
        np.testing.assert_allclose(second, expected[b.tobytes()][out], rtol=1e-6)


@pytest.mark.parametrize("name", ["tiny_cnn.int8.tflite", "tiny_cnn.fp32.tflite"])
def test_compiled_model_gives_the_interpreters_outputs(quickstart_dir, keras_reference, name):
    inputs, _ = keras_reference
    interpreter = load(quickstart_dir / name, threads=1)
    compiled = load(quickstart_dir / name, threads=1, runtime="litert-compiled", accelerator="cpu")
    assert (compiled.runtime, compiled.accelerator, interpreter.accelerator) == ("litert-compiled", "cpu", "cpu")
    assert compiled.inputs == interpreter.inputs and compiled.outputs == interpreter.outputs  # quantization too
    np.testing.assert_allclose(compiled.predict(inputs[:37], batch_size=16), interpreter.predict(inputs[:37]), atol=1e-6)
    feeds = interpreter.model_inputs({interpreter.inputs[0].name: inputs[:1]})
    (a,), (b,) = interpreter.run(feeds, raw=True).values(), compiled.run(feeds, raw=True).values()
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b) if a.dtype == np.int8 else np.testing.assert_allclose(a, b, atol=1e-6)
    compiled.close()


def test_a_backend_is_chosen_by_name_and_refused_where_it_does_not_apply(quickstart_dir):
    assert runtimes.runtimes_for("m.tflite") == ["litert", "litert-compiled"]
    assert runtimes.runtimes_for("m.onnx") == ["onnxruntime"]
    with pytest.raises(BadInputError, match=r"runtime 'litert-compiled' does not run '.onnx' files.*\['onnxruntime'\]"):
        load(quickstart_dir / "tiny_cnn.fp32.onnx", runtime="litert-compiled")
    with pytest.raises(BadInputError, match="accelerator do\\(es\\) not apply.*run by litert.*runtime='litert-compiled'"):
        load(quickstart_dir / "tiny_cnn.int8.tflite", accelerator="gpu")
    with pytest.raises(BadInputError, match="accelerator must be one of \\['cpu', 'gpu', 'npu'\\]; received 'tpu'"):
        load(quickstart_dir / "tiny_cnn.int8.tflite", runtime="litert-compiled", accelerator="tpu")


def test_an_absent_accelerator_is_refused_naming_what_is_available(quickstart_dir, monkeypatch):
    from edgeship.runtimes import litert_compiled

    real = litert_compiled._compile

    def cpu_only(path, accelerator, threads):  # this host's LiteRT, whatever its hardware
        if accelerator != "cpu":
            raise RuntimeError("ERROR: [litert/runtime/compiled_model.cc:1036]")
        return real(path, accelerator, threads)

    monkeypatch.setattr(litert_compiled, "_compile", cpu_only)
    with pytest.raises(BadInputError) as caught:
        load(quickstart_dir / "tiny_cnn.int8.tflite", runtime="litert-compiled", accelerator="gpu")
    message = str(caught.value)
    assert "\n" not in message and "for the GPU alone" in message and "available for this model here: cpu" in message
    assert "received accelerator='gpu'" in message and "Use accelerator 'cpu'" in message


def test_can_run_answers_no_for_a_file_no_runtime_takes(tmp_path):
    from edgeship.runtimes import can_run

    ok, why = can_run(tmp_path / "model.web")
    assert ok is False and "no runtime runs '.web' files" in why and ".tflite" in why
