"""The bring-your-own-model matrix through the CLI, as a stranger would run it.

    .venv/bin/python benchmarks/byom_sweep.py [--out DIR] [--only NAME ...] [--json FILE]

Builds every case of ``tests/byom_models.py`` (fourteen models and their data, trained for a few
epochs), then runs ``edgeship convert`` -> ``validate`` (without --data) -> ``doctor`` -> ``bench`` ->
``device run --target local`` on each as a subprocess. It prints the matrix: model x format
(made, or refused and why) with the headline figure against float per artifact, and checks that
no command printed a Traceback or exited with a code outside 0/1/2.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import byom_models  # noqa: E402

EDGESHIP = [sys.executable, "-m", "edgeship.cli"]


def run(args: list[str]) -> tuple[int, str, str, float]:
    start = time.perf_counter()
    proc = subprocess.run(EDGESHIP + args, capture_output=True, text=True, timeout=900)
    return proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start


def sweep(case: byom_models.Case, work: Path) -> dict:
    out = work / f"out-{case.name}"
    steps, problems = {}, []
    convert = ["convert", str(case.model), "--to", ",".join(case.targets), "--data", case.data, "--out", str(out)]
    if case.preprocess is not None:
        convert += ["--preprocess", case.preprocess]
    commands = {"convert": convert, "validate": ["validate", str(out), "--max-drop", "5", "--json"],
                "doctor": ["doctor", str(out), "--max-drop", "5", "--samples", "50", "--max-layers", "2", "--runs", "20"]}
    for step, args in commands.items():
        code, stdout, stderr, seconds = run(args)
        steps[step] = {"code": code, "seconds": round(seconds, 1), "stderr": stderr.strip().splitlines()[-1:]}
        if "Traceback" in stdout + stderr or code not in (0, 1, 2):
            problems.append(f"{step}: exit {code}{' with a Traceback' if 'Traceback' in stdout + stderr else ''}")
        if step == "validate" and stdout.strip():
            steps[step]["report"] = json.loads(stdout)
        if not (out / "manifest.json").exists():
            break
    manifest = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").exists() else {"artifacts": []}
    int8 = next((a["path"] for a in manifest["artifacts"] if a["precision"] == "int8"), None)
    if int8:
        code, stdout, stderr, seconds = run(["bench", str(out / int8), "--runs", "50", "--json"])
        steps["bench"] = {"code": code, "seconds": round(seconds, 1)}
        problems += [f"bench: exit {code}"] if code not in (0, 1, 2) or "Traceback" in stderr else []
    if (out / "bundle").exists():
        code, stdout, stderr, seconds = run(["device", "run", "--target", "local", "--bundle", str(out / "bundle"),
                                             "--runs", "5", "--json"])
        steps["device"] = {"code": code, "seconds": round(seconds, 1)}
        problems += [f"device: exit {code}"] if code not in (0, 1, 2) or "Traceback" in stderr else []
    return {"case": case.name, "task": case.task, "targets": list(case.targets), "steps": steps, "problems": problems,
            "refusal": steps["convert"]["stderr"][0] if steps["convert"]["code"] else ""}


def _row(result: dict, target: str) -> str:
    report = result["steps"].get("validate", {}).get("report", {})
    entry = next((e for e in report.get("artifacts", []) if e["name"] == target), None)
    if entry is None:
        why = result["refusal"]
        return "refused" + (": " + why.split(target + ": ", 1)[1][:70] if target + ": " in why else "")
    head = entry.get("headline")
    if head is None:
        return entry["status"][:70]
    return f"{head['name']} {head['value']:.4g} vs {head['reference']:.4g} ({head['delta']:+.2f} {head['unit']})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="edgeship-byom-"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for build in byom_models.BUILDERS:
        if args.only and build.__name__ not in args.only:
            continue
        case = build(work)
        results.append(sweep(case, work))
        codes = ", ".join(f"{step} {info['code']}" for step, info in results[-1]["steps"].items())
        print(f"{case.name}: {codes}", flush=True)
    print("\n| model | task | format | result against float |\n| --- | --- | --- | --- |")
    for result in results:
        for target in result["targets"]:
            print(f"| {result['case']} | {result['task']} | {target} | {_row(result, target)} |")
    bad = [f"{r['case']}: {p}" for r in results for p in r["problems"]]
    print("\nno Traceback and every exit code in 0/1/2" if not bad else "\nPROBLEMS:\n" + "\n".join(bad))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
