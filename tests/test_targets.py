"""Targets and bundles: local, a real OpenSSH server on 127.0.0.1, adb up to its command lines, and
the device_tests suite run against a bundle."""

from __future__ import annotations

import getpass
import json
import re
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from edgeship import _io, bundle
from edgeship.errors import BadArtifactError, BadInputError, RuntimeFailure
from edgeship.runtimes._wheels import edgeship_wheel
from edgeship.runtimes.targets import AdbTarget, LocalTarget, SshTarget, parse_target, run_targets

ROOT = Path(__file__).resolve().parents[1]
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args: str) -> tuple[int, str]:
    from edgeship.cli import cli

    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def qs_bundle(quickstart_dir) -> Path:
    return quickstart_dir / "bundle"


@pytest.fixture
def tampered_bundle(qs_bundle, tmp_path) -> Path:
    """A copy whose int8 TFLite expectation is off by 1.0, with its checksum updated to match."""
    folder = tmp_path / "bundle"
    shutil.copytree(qs_bundle, folder)
    manifest = bundle.BundleManifest.load(folder)
    entry = next(e for e in manifest.artifacts if e.name == "tflite:int8")
    expected = np.load(folder / entry.expected) + 1.0
    np.save(folder / entry.expected, expected)
    data = json.loads((folder / "bundle.json").read_text())
    data["files"][entry.expected] = _io.sha256_path(folder / entry.expected)
    (folder / "bundle.json").write_text(json.dumps(data))
    return folder


# ------------------------------------------------------------------------------------- bundle

def test_bundle_records_accuracy_on_its_own_samples(qs_bundle):
    manifest, (inputs,), labels = bundle.load(qs_bundle)  # one input: the layout every edgeship reads
    assert len(inputs) == len(labels) == 64 and manifest.files.keys() >= {"inputs.npy", "labels.npy"}
    assert manifest.inputs == "inputs.npy" and manifest.schema_version == 1
    for entry in manifest.artifacts:
        expected = np.load(qs_bundle / entry.expected)
        assert entry.host_accuracy == float(np.mean(expected.argmax(-1) == labels))
        assert entry.min_accuracy == pytest.approx(max(0.0, entry.host_accuracy - bundle.ACCURACY_SLACK))
        assert entry.test_accuracy is not None and entry.max_abs_error > 0


def test_a_changed_bundle_file_is_refused_before_it_ships(qs_bundle, tmp_path):
    folder = tmp_path / "bundle"
    shutil.copytree(qs_bundle, folder)
    victim = folder / "tiny_cnn.int8.tflite"
    victim.write_bytes(victim.read_bytes()[:-1] + b"\x01")
    with pytest.raises(BadArtifactError, match="tiny_cnn.int8.tflite has sha256 .* bundle.json records"):
        run_targets(["local"], folder)


def _edited_bundle(qs_bundle: Path, tmp_path: Path, edit) -> Path:
    folder = tmp_path / "bundle"
    shutil.copytree(qs_bundle, folder)
    data = json.loads((folder / "bundle.json").read_text())
    edit(data, folder)
    (folder / "bundle.json").write_text(json.dumps(data))
    return folder


def _expected_to(target: str):
    def edit(data, folder):
        data["artifacts"][0]["expected"] = target
    return edit


def _listed_outside(data, folder):
    outside = folder.parent / "outside.npy"
    np.save(outside, np.zeros(3))
    data["files"]["../outside.npy"] = _io.sha256_path(outside)


def _stray_file(data, folder):
    (folder / "notes.txt").write_text("not listed")


def _object_inputs(data, folder):
    buffer = __import__("io").BytesIO()
    np.save(buffer, np.array([{"x": 1}, None], dtype=object), allow_pickle=True)
    (folder / "inputs.npy").write_bytes(buffer.getvalue())
    data["files"]["inputs.npy"] = _io.sha256_path(folder / "inputs.npy")


@pytest.mark.parametrize(("edit", "message"), [
    (_expected_to("/etc/passwd"), "names '/etc/passwd', which is not a plain path inside the bundle"),
    (_expected_to("../../outside.npy"), "names '../../outside.npy', which is not a plain path inside the bundle"),
    (_expected_to("labels.npy.unlisted"), "records no sha256 for it in 'files'"),
    (_listed_outside, "names '../outside.npy', which is not a plain path inside the bundle"),
    (_stray_file, "holds 'notes.txt', which bundle.json does not list"),
    (_object_inputs, "bundle file inputs.npy is not a numeric .npy array"),
], ids=["absolute", "dotdot", "unlisted", "listed-outside", "stray-file", "object-array"])
def test_a_bundle_is_a_closed_world(qs_bundle, tmp_path, edit, message, monkeypatch):
    """Every path in bundle.json stays in the folder and is hashed, every file there is listed, and
    nothing but bundle.json is read before that is known."""
    folder = _edited_bundle(qs_bundle, tmp_path, edit)
    opened: list[str] = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda f, *a, **k: opened.append(str(f)) or real_load(f, *a, **k))
    with pytest.raises(BadArtifactError, match=re.escape(message)):
        bundle.load(folder)
    if edit is not _object_inputs:  # refused on what bundle.json says, before any array is read
        assert opened == []
    monkeypatch.undo()
    code, out = _cli("device", "run", "--bundle", str(folder), "--target", "local")
    assert code == 1 and message in out.replace("\n", "") and "Traceback" not in out, out


# -------------------------------------------------------------------------------------- local

def _timed(report_artifact) -> bool:
    """Whether a device check should carry latency: not for a reference evaluator (Core ML off macOS)."""
    return not report_artifact.runtime.startswith("mil-numpy")


def test_local_target_checks_outputs_accuracy_and_latency(qs_bundle):
    manifest = bundle.BundleManifest.load(qs_bundle)
    [report] = run_targets(["local"], qs_bundle, runs=10, warmup=1, threads=1)
    assert report.passed is True and not report.error and report.model == "tiny_cnn"
    assert [a.name for a in report.artifacts] == [e.name for e in manifest.artifacts]
    assert {"tflite:fp32", "tflite:int8", "onnx:fp32", "onnx:int8"} <= {a.name for a in report.artifacts}
    for a in report.artifacts:
        assert a.status == "ok" and a.outputs_ok and a.accuracy_ok and a.samples == 64
        assert a.max_abs_error_vs_host <= a.tolerance and a.accuracy >= a.min_accuracy
        if _timed(a):
            assert a.benchmark.count == 10 and a.benchmark.threads == 1 and a.benchmark.p50_ms > 0
        else:
            assert a.benchmark is None  # a reference evaluator's speed is not the device's
    assert report.tensorflow_imported is False and report.host["cpu"]


def test_a_wrong_expectation_fails_that_artifact_only(tampered_bundle):
    code, out = _cli("device", "run", "--target", "local", "--bundle", str(tampered_bundle), "--runs", "5", "--json")
    assert code == 2, out
    report = json.loads(out)
    status = {a["name"]: (a["status"], a["outputs_ok"]) for a in report["artifacts"]}
    assert status.pop("tflite:int8") == ("failed", False)
    assert set(status.values()) == {("ok", True)} and report["passed"] is False


def _device_tests(bundle_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "device_tests", "--bundle", str(bundle_dir), "-q",
                           "-p", "no:cacheprovider", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_device_tests_suite_passes_on_the_bundle_and_records_latency(qs_bundle, tmp_path):
    names = [e.name for e in bundle.BundleManifest.load(qs_bundle).artifacts]
    latency = tmp_path / "latency.json"
    proc = _device_tests(qs_bundle, "--runs", "10", "--latency-json", str(latency))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert f"{1 + 2 * len(names) + 4} passed" in proc.stdout and "latency on this device" in proc.stdout
    figures = json.loads(latency.read_text())
    assert sorted(figures) == ["onnx:fp32", "onnx:int8", "tflite:fp32", "tflite:int8"]
    assert all(f["count"] == 10 and 0 < f["min_ms"] <= f["p50_ms"] <= f["max_ms"] for f in figures.values())


def test_device_tests_suite_catches_a_wrong_expectation_and_a_missed_budget(tampered_bundle):
    proc = _device_tests(tampered_bundle, "--runs", "5", "--max-p50-ms", "1e-9")
    assert proc.returncode == 1
    assert "test_outputs_within_tolerance[tflite:int8]" in proc.stdout and "over the tolerance" in proc.stdout
    assert "over the budget --max-p50-ms" in proc.stdout
    assert proc.stdout.count("FAILED device_tests/test_bundle.py::test_latency[") == 4  # each timed artifact, 1 fs
    assert "5 failed" in proc.stdout


# ---------------------------------------------------------------------------------- parsing

def test_target_urls_parse_into_targets():
    ssh = parse_target("ssh://pi@board.local:2222/opt/edge", identity="k", options=("ConnectTimeout=5",))
    assert (ssh.user, ssh.host, ssh.port, ssh.path, ssh.url) == ("pi", "board.local", 2222, "/opt/edge", "ssh://pi@board.local:2222/opt/edge")
    assert ssh.ssh_command("true") == ["ssh", "-o", "ConnectTimeout=5", "-o", "BatchMode=yes", "-o",
                                       "StrictHostKeyChecking=accept-new", "-o", "LogLevel=ERROR", "-l", "pi", "-p",
                                       "2222", "-i", "k", "-o", "IdentitiesOnly=yes", "--", "board.local", "true"]
    assert parse_target("ssh://board").path == ".edgeship" and parse_target("ssh://board").url == "ssh://board"
    assert isinstance(parse_target("local"), LocalTarget)
    assert parse_target("adb://192.168.1.7:5555").serial == "192.168.1.7:5555"
    for bad in ("ftp://x", "ssh://", "adb://", "phone"):
        with pytest.raises(BadInputError, match=r"unknown target .*local.*ssh://\[user@\]host\[:port\]\[/path\].*adb://SERIAL"):
            parse_target(bad)
    with pytest.raises(BadInputError, match="names the root folder"):
        parse_target("ssh://board/")


HOSTILE_TARGETS = {
    "ssh://-oProxyCommand=touch${IFS}x@127.0.0.1": "the user in target",
    "ssh://-E/tmp/log@127.0.0.1": "the host in target",
    "ssh://pi@-oProxyCommand=x": "the host in target",
    "ssh://pi@board/a;touch${IFS}x": "the path in target",
    "ssh://pi@board/$(id)": "the path in target",
    "ssh://pi@board/`id`": "the path in target",
    "ssh://pi@board:0": "a port is a number from 1 to 65535",
    "ssh://pi@board:99999": "not a number from 1 to 65535",
    "ssh://pi:secret@board": "holds a password",
    "ssh://@board": "empty user name",
    "ssh://pi@board/x y": "white space or control characters",
    "ssh://pi@board\n-oProxyCommand=x": "white space or control characters",
    "local;touch x": "white space or control characters",
    "adb://-s": "the serial in target",
    "adb://R58M/x": "more than a serial",
    "ssh://user@": "unknown target",
    "local[/]": "unknown target",
    "ssh://pi@[::1": "not a URL edgeship reads",
    "": "unknown target",
}


@pytest.mark.parametrize("url", sorted(HOSTILE_TARGETS))
def test_hostile_target_strings_are_refused_before_any_command_is_built(url):
    with pytest.raises(BadInputError, match=re.escape(HOSTILE_TARGETS[url])) as info:
        parse_target(url.replace("\\n", "\n"))
    assert "\n" not in str(info.value).replace("\\n", "")


def test_no_target_field_reaches_ssh_or_adb_as_an_option():
    """User and port go as -l/-p values and the host after '--'; the same checks guard the classes
    built directly from Python."""
    argv = parse_target("ssh://deploy-bot@[::1]:2222/opt/edge-ship").ssh_command("true")
    assert argv[argv.index("--"):] == ["--", "::1", "true"]
    assert argv[argv.index("-l") + 1] == "deploy-bot" and argv[argv.index("-p") + 1] == "2222"
    assert all(not a.startswith("-") for a in argv[argv.index("--") + 1:])
    for bad in ({"host": "-oProxyCommand=x"}, {"host": "h", "user": "-E/tmp/x"}, {"host": "h", "path": "-x"},
                {"host": "h", "port": 70000}, {"host": "h x"}):
        with pytest.raises(BadInputError):
            SshTarget(**bad)
    with pytest.raises(BadInputError, match="serial"):
        AdbTarget("-P5037")
    with pytest.raises(BadInputError, match="each target may appear once"):
        run_targets(["local", "local"], "unused")


def test_edgeship_wheel_is_reproducible_and_holds_the_runtime(tmp_path):
    first = edgeship_wheel(tmp_path / "a")
    second = edgeship_wheel(tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()  # so a target can tell nothing changed
    names = zipfile.ZipFile(first).namelist()
    for module in ("edgeship/bundle.py", "edgeship/runtimes/litert.py", "edgeship/runtimes/_device_check.py",
                   "edgeship/runtimes/targets.py", "edgeship-0.1.0.dist-info/RECORD"):
        assert module in names
    metadata = zipfile.ZipFile(first).read("edgeship-0.1.0.dist-info/METADATA").decode()
    requires = [line.split(": ", 1)[1] for line in metadata.splitlines() if line.startswith("Requires-Dist: ")]
    assert [r for r in requires if "extra ==" not in r] == ["numpy<2.4,>=2.0"]  # pip resolves the device's deps
    device = [r for r in requires if 'extra == "litert"' in r or 'extra == "onnx"' in r]
    assert len(device) == 2 and not any("tensorflow" in r for r in device)


def test_ssh_install_plans_for_online_and_offline_devices(qs_bundle, tmp_path):
    manifest = bundle.BundleManifest.load(qs_bundle)
    online_key, files, pip = SshTarget(host="h")._install_plan(manifest, tmp_path)
    assert list(files) == ["edgeship-0.1.0-py3-none-any.whl"]
    assert pip == ["wheels/edgeship-0.1.0-py3-none-any.whl[litert,onnx]"]  # the device's index brings the rest
    offline = tmp_path / "wheels"
    offline.mkdir()
    with pytest.raises(BadInputError, match=r"no wheel of numpy in .*wheels; it holds \[\]"):
        SshTarget(host="h", wheels=str(offline))._install_plan(manifest, tmp_path)
    for name in ("numpy-2.3.5-cp311-cp311-linux_aarch64.whl", "ai_edge_litert-2.3.0-cp311-cp311-linux_aarch64.whl",
                 "onnxruntime-1.31.1-cp311-cp311-linux_aarch64.whl"):
        (offline / name).write_bytes(b"")
    offline_key, files, pip = SshTarget(host="h", wheels=str(offline))._install_plan(manifest, tmp_path, "aarch64")
    # pip resolves from the folder alone: what the interpreters need must be there too
    assert pip == ["--no-index", "--find-links", "wheels", "wheels/edgeship-0.1.0-py3-none-any.whl[litert,onnx]"]
    assert len(files) == 4 and offline_key != online_key
    with pytest.raises(BadInputError, match=r"ai_edge_litert-2.3.0-cp311-cp311-linux_aarch64.whl is built for linux_aarch64, "
                       "but the target is x86_64"):
        SshTarget(host="h", wheels=str(offline))._install_plan(manifest, tmp_path, "x86_64")


# ------------------------------------------------------------------------------------------ ssh

@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """An OpenSSH server on 127.0.0.1 with a throwaway host key, for this user only; stopped after."""
    if not Path(SSHD).exists():
        pytest.skip("no OpenSSH server here (.ci/run installs Debian's openssh-server)")
    home = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / key)], check=True)
    shutil.copy(home / "client_key.pub", home / "authorized_keys")
    port = _free_port()
    (home / "sshd_config").write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {home / 'host_key'}",
        f"AuthorizedKeysFile {home / 'authorized_keys'}", f"PidFile {home / 'sshd.pid'}",
        "UsePAM no", "StrictModes no", "PermitRootLogin yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", f"AllowUsers {getpass.getuser()}", "LogLevel ERROR", "",
    ]))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # Debian's sshd wants its privilege separation folder
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(home / "sshd_config")], stderr=subprocess.PIPE)
    try:
        _wait_for_port(port, server)
        yield SimpleNamespace(port=port, key=str(home / "client_key"), home=home,
                              options=(f"UserKnownHostsFile={home / 'known_hosts'}", "StrictHostKeyChecking=no"))
    finally:
        server.terminate()
        server.wait(timeout=10)


def _wait_for_port(port: int, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"sshd exited: {server.stderr.read().decode()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail("sshd did not start listening within 15 s")


def test_bundle_runs_end_to_end_over_ssh_beside_local(sshd, qs_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESHIP_CACHE", str(tmp_path / "cache"))
    remote = tmp_path / "device"
    url = f"ssh://{getpass.getuser()}@127.0.0.1:{sshd.port}{remote}"
    options = [x for o in sshd.options for x in ("-o", o)]
    code, out = _cli("device", "run", "--target", url, "--target", "local", "--bundle", str(qs_bundle),
                     "-i", sshd.key, *options, "--python", sys.executable, "--wheels", "host",
                     "--runs", "10", "--warmup", "2", "--json")
    assert code == 0, out
    over_ssh, local = json.loads(out)
    assert (over_ssh["target"], local["target"]) == (url, "local") and over_ssh["passed"] and local["passed"]
    # only the thin install there: edgeship, numpy and the two interpreters the bundle needs
    assert sorted(over_ssh["installed"]) == ["ai-edge-litert", "edgeship", "numpy", "onnxruntime"]
    assert over_ssh["tensorflow_imported"] is False
    names = [e.name for e in bundle.BundleManifest.load(qs_bundle).artifacts]
    assert [(a["name"], a["status"]) for a in over_ssh["artifacts"]] == [(n, "ok") for n in names]
    timed = [a for a in over_ssh["artifacts"] if a["name"].startswith(("tflite", "onnx"))]
    assert len(timed) == 4 and all(a["benchmark"]["count"] >= 10 and a["benchmark"]["p50_ms"] > 0 for a in timed)
    # the venv and the bundle copy really are on the "device" side
    assert (remote / "venv" / ".edgeship-install").is_file() and (remote / "bundle" / "bundle.json").is_file()
    assert not list((remote / "venv").glob("lib/python*/site-packages/tensorflow"))


def test_an_unreachable_ssh_target_is_an_error_while_others_finish(qs_bundle):
    url = f"ssh://nobody@127.0.0.1:{_free_port()}/x"
    code, out = _cli("device", "run", "--target", url, "--target", "local", "--bundle", str(qs_bundle),
                     "--runs", "3", "--json")
    assert code == 1
    failed, local = json.loads(out)
    assert failed["passed"] is None and "RuntimeFailure: cannot reach " + url in failed["error"]
    assert local["passed"] is True


# ------------------------------------------------------------------------------------------ adb

def test_adb_command_lines(qs_bundle, tmp_path):
    target = AdbTarget("R58M12ABC", server_port=5099, python="/data/data/com.termux/files/usr/bin/python")
    staged = target.stage(qs_bundle, tmp_path)
    assert (staged / "lib" / "edgeship" / "runtimes" / "_device_check.py").is_file()
    assert (staged / "bundle" / "bundle.json").is_file()
    base = ["adb", "-P", "5099", "-s", "R58M12ABC"]
    assert target.commands(staged, runs=20, warmup=3, threads=2) == [
        base + ["shell", "rm -rf /data/local/tmp/edgeship && mkdir -p /data/local/tmp/edgeship"],
        base + ["push", str(staged / "lib"), str(staged / "bundle"), "/data/local/tmp/edgeship/"],
        base + ["shell", "cd /data/local/tmp/edgeship && PYTHONPATH=/data/local/tmp/edgeship/lib "
                "/data/data/com.termux/files/usr/bin/python -m edgeship.runtimes._device_check "
                "--bundle /data/local/tmp/edgeship/bundle --target adb://R58M12ABC --runs 20 --warmup 3 --threads 2"],
    ]


@pytest.mark.skipif(shutil.which("adb") is None, reason="no adb client here (.ci/run installs Debian's adb)")
def test_adb_client_reports_a_missing_device(qs_bundle):
    port = _free_port()  # a private adb server, stopped below
    try:
        with pytest.raises(RuntimeFailure, match="adb -P .* -s EDGESHIP-NO-DEVICE shell .*device 'EDGESHIP-NO-DEVICE' not found"):
            AdbTarget("EDGESHIP-NO-DEVICE", server_port=port, timeout=60).run(qs_bundle, runs=1)
    finally:
        subprocess.run(["adb", "-P", str(port), "kill-server"], capture_output=True, timeout=30)


def test_adb_refuses_a_phone_without_python_and_names_the_alternatives(qs_bundle, tmp_path):
    # a stand-in for a phone's adb (no phone here): its shell finds no python3, as on a stock Android
    fake = tmp_path / "adb"
    fake.write_text("#!/bin/sh\necho EDGESHIP-NO-PYTHON\n")
    fake.chmod(0o755)
    (report,) = run_targets([AdbTarget("R58M12ABC", adb=str(fake))], qs_bundle)
    assert report.passed is None and "adb://R58M12ABC has no 'python3' on its PATH" in report.error
    assert "--target qemu-arm64:DIR" in report.error and "ssh://user@board" in report.error
