"""report.json -> one self-contained report.html: tables and matplotlib plots embedded as PNG.

Nothing is fetched when the page opens: no remote scripts, styles or fonts. A figure that was
not measured is not drawn; the page says why instead.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from edgeship import _io
from edgeship._deps import require
from edgeship.formats import FORMATS
from edgeship.records import AccuracyDelta, Headline, Report, ReportEntry
from edgeship.tasks import change_text, value_text

if TYPE_CHECKING:  # matplotlib is imported when a page is drawn (edgeship._deps.require)
    from matplotlib.axes import Axes
    from matplotlib.patches import Rectangle

PAGE_NAME = "report.html"
_REFERENCE_COLOR = "#6b7280"


def _color(fmt: str) -> str:
    """The bar colour of a format's artifacts (its ``Format.color``)."""
    return FORMATS.get(fmt).color if fmt in FORMATS else "#999"


def _pyplot() -> ModuleType:
    matplotlib = require("matplotlib", "draw the HTML report's plots")
    matplotlib.use("Agg")
    return require("matplotlib.pyplot")


def _png(draw: Callable[[Axes], None], width: float = 7.0, height: float = 3.2) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(width, height), dpi=110)
    try:
        draw(ax)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _measured(report: Report) -> list[ReportEntry]:
    return [e for e in report.artifacts if e.validation is not None]


def _headlined(report: Report) -> list[ReportEntry]:
    return [e for e in _measured(report) if _figures(e).headline is not None]


def _figures(entry: ReportEntry) -> AccuracyDelta:
    """The figures of an entry ``_measured`` picked."""
    if entry.validation is None:
        raise ValueError(f"{entry.name} was not measured")
    return entry.validation


def _headline(entry: ReportEntry) -> Headline:
    """The headline figure of an entry ``_headlined`` picked."""
    head = _figures(entry).headline
    if head is None:
        raise ValueError(f"{entry.name} has no headline figure")
    return head


def _headline_plot(report: Report) -> Callable[[Axes], None]:
    """Each artifact's headline figure (accuracy, AUC, an error) beside the float reference's."""
    entries = _headlined(report)
    head = _headline(entries[0])
    percent = head.unit == "points"
    scale = 100.0 if percent or head.unit == "AUC points" else 1.0

    def draw(ax: Axes) -> None:
        names = ["float"] + [e.name for e in entries]
        values = [head.reference * scale] + [_headline(e).value * scale for e in entries]
        colors = [_REFERENCE_COLOR] + [_color(e.format) for e in entries]
        ax.barh(names[::-1], values[::-1], color=colors[::-1])
        if scale == 100.0:
            ax.set_xlim(max(0.0, min(values) - 5), 100)
        ax.axvline(values[0], color="#111", lw=1, ls="--", label="float reference")
        if report.gate.max_drop is not None and scale == 100.0:
            ax.axvline(
                values[0] - report.gate.max_drop,
                color="#dc2626",
                lw=1,
                ls=":",
                label=f"gate (-{report.gate.max_drop:g} {head.unit})",
            )
        for y, v in enumerate(values[::-1]):
            ax.text(v, y, f" {v:.2f}{'%' if percent else ''}", va="center", fontsize=8)
        ax.set_xlabel(f"{head.name} on {report.dataset} test split{' (%)' if percent else ''}")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)

    return draw


def _latency_plot(report: Report) -> Callable[[Axes], None]:
    entries = [(e, e.benchmark) for e in report.artifacts if e.benchmark is not None]

    def draw(ax: Axes) -> None:
        for y, (e, b) in enumerate(entries):
            color = _color(e.format)
            us = lambda ms: ms * 1000  # noqa: E731
            ax.plot([us(b.min_ms), us(b.max_ms)], [y, y], color=color, lw=1)
            ax.add_patch(_rect(us(b.p5_ms), y - 0.3, us(b.p95_ms) - us(b.p5_ms), 0.6, color))
            ax.plot([us(b.p50_ms)] * 2, [y - 0.3, y + 0.3], color="#111", lw=2)
            ax.plot(us(b.p99_ms), y, "o", color="#111", ms=3)
        ax.set_yticks(range(len(entries)), [e.name for e, _ in entries])
        ax.set_xscale("log")
        ax.set_xlabel("latency per inference, batch 1 (µs, log scale): line min–max, box p5–p95, bar p50, dot p99")
        ax.invert_yaxis()

    return draw


def _rect(x: float, y: float, w: float, h: float, color: str) -> Rectangle:
    patches = require("matplotlib.patches")
    return patches.Rectangle((x, y), w, h, color=color, alpha=0.6)


def _size_plot(report: Report) -> Callable[[Axes], None]:
    def draw(ax: Axes) -> None:
        entries = report.artifacts
        kib = [e.size_bytes / 1024 for e in entries]
        ax.barh([e.name for e in entries][::-1], kib[::-1], color=[_color(e.format) for e in entries][::-1])
        for y, v in enumerate(kib[::-1]):
            ax.text(v, y, f" {v:.1f} KiB", va="center", fontsize=8)
        ax.set_xlabel("size on disk (KiB)")

    return draw


def _f1_plot(report: Report) -> Callable[[Axes], None]:
    entries = [e for e in _measured(report) if _figures(e).per_class.get("f1")]

    def draw(ax: Axes) -> None:
        reference = report.reference_per_class.get("f1", ())
        classes = report.classes or tuple(str(i) for i in range(len(reference)))
        x = np.arange(len(classes))
        width = 0.8 / (1 + len(entries))
        ax.bar(x, reference, width, label="float", color=_REFERENCE_COLOR)
        for i, e in enumerate(entries, start=1):
            ax.bar(
                x + i * width,
                _figures(e).per_class["f1"],
                width,
                label=e.name,
                color=_color(e.format),
                alpha=0.5 + 0.5 * (i % 2),
            )
        ax.set_xticks(x + 0.4 - width / 2, classes, fontsize=8)
        lowest = min([min(reference, default=1)] + [min(_figures(e).per_class["f1"]) for e in entries])
        ax.set_ylim(max(0.0, lowest - 0.05), 1.0)
        ax.set_ylabel("F1 per class")
        ax.legend(fontsize=7, ncol=3)

    return draw


def _confusion_plot(report: Report, entry: ReportEntry) -> Callable[[Axes], None]:
    def draw(ax: Axes) -> None:
        matrix = np.asarray(_figures(entry).confusion_matrix)
        ax.imshow(matrix, cmap="Blues")
        for (i, j), v in np.ndenumerate(matrix):
            if v:
                ax.text(
                    j,
                    i,
                    str(v),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if v > matrix.max() / 2 else "black",
                )
        labels = report.classes or [str(i) for i in range(len(matrix))]
        ax.set_xticks(range(len(matrix)), labels, fontsize=7)
        ax.set_yticks(range(len(matrix)), labels, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")

    return draw


def _training_plot(history: dict[str, list[float]]) -> Callable[[Axes], None]:
    def draw(ax: Axes) -> None:
        epochs = np.arange(1, len(history.get("loss", [])) + 1)
        for key in ("loss", "val_loss"):
            if key in history:
                ax.plot(epochs, history[key], label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        right = ax.twinx()
        for key in ("accuracy", "val_accuracy"):
            if key in history:
                right.plot(epochs, history[key], ls="--", label=key)
        right.set_ylabel("accuracy")
        ax.legend(loc="center left", fontsize=8)
        right.legend(loc="center right", fontsize=8)

    return draw


def _table(report: Report) -> str:
    heads = [_headline(e) for e in _headlined(report)]
    name, unit = (heads[0].name, heads[0].unit) if heads else ("accuracy", "points")
    reference = value_text(unit, heads[0].reference if heads else report.reference_accuracy)
    head = "".join(
        f"<th>{html.escape(c)}</th>"
        for c in (
            "artifact",
            "size",
            name,
            f"Δ {unit}",
            "agreement",
            "SQNR dB",
            "max abs err",
            "p50 µs",
            "p99 µs",
            "gate",
            "evaluated with",
        )
    )
    rows = [f"<tr><td>float reference</td><td></td><td>{html.escape(reference)}</td><td colspan=8></td></tr>"]
    for e in report.artifacts:
        v, b = e.validation, e.benchmark
        h = v.headline if v else None
        cells = [e.name, f"{e.size_bytes / 1024:.1f} KiB"]
        cells += (
            [
                value_text(h.unit, h.value) if h else "—",
                change_text(h) if h else "—",
                f"{v.agreement * 100:.1f}%" if v.agreement is not None else "—",
                f"{v.sqnr_db:.1f}",
                f"{v.max_abs_error:.2g}",
            ]
            if v
            else ["—"] * 5
        )
        cells += [f"{b.p50_ms * 1000:.0f}", f"{b.p99_ms * 1000:.0f}"] if b else ["—", "—"]
        cells.append("" if e.passed is None else "pass" if e.passed else "FAIL")
        cells.append(e.evaluated_with if v else e.status)
        css = ' class="fail"' if e.passed is False else ""
        rows.append(f"<tr{css}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _reference_text(report: Report) -> str:
    heads = [_headline(e) for e in _headlined(report)]
    if heads:
        return f"{heads[0].name} {value_text(heads[0].unit, heads[0].reference)}"
    return "accuracy " + value_text("points", report.reference_accuracy)


def _figure(title: str, png: str, note: str = "") -> str:
    caption = f"<p class=note>{html.escape(note)}</p>" if note else ""
    return (
        f'<section><h2>{html.escape(title)}</h2><img class=plot alt="{html.escape(title)}" '
        f'src="data:image/png;base64,{png}">{caption}</section>'
    )


def render(report: Report) -> str:
    """The page for ``report`` as one HTML string."""
    headlined = _headlined(report)
    title = f"{_headline(headlined[0]).name} against float" if headlined else ""
    sections = [_figure(title[:1].upper() + title[1:], _png(_headline_plot(report)))] if headlined else []
    if any(e.benchmark for e in report.artifacts):
        sections.append(
            _figure(
                "Latency distribution",
                _png(_latency_plot(report)),
                "Measured with edgeship's thin runtime on " + str(report.host.get("cpu", "this host")),
            )
        )
    sections.append(_figure("Size", _png(_size_plot(report), height=2.6)))
    if report.reference_per_class and _measured(report):
        sections.append(_figure("Per-class F1: float and each artifact", _png(_f1_plot(report))))
    confused = [e for e in _measured(report) if _figures(e).confusion_matrix]
    if confused:
        worst = min(confused, key=lambda e: (e.accuracy or 0.0, _figures(e).agreement or 0.0, _figures(e).sqnr_db))
        sections.append(
            _figure(
                f"Confusion matrix of the worst artifact ({worst.name})",
                _png(_confusion_plot(report, worst), width=4.6, height=4.2),
            )
        )
    if report.training and report.training.get("history"):
        sections.append(
            _figure(
                f"Training curves ({report.training.get('recipe', '')})",
                _png(_training_plot(report.training["history"])),
            )
        )
    skipped = [e for e in report.artifacts if e.validation is None]
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in report.notes)
    notes += "".join(f"<li>{html.escape(e.name)}: {html.escape(e.status)}</li>" for e in skipped)
    verdict = {True: "passed", False: "FAILED", None: "no gate set"}[report.passed]
    return _PAGE.format(
        title=html.escape(f"edgeship report: {report.model} on {report.dataset}"),
        summary=html.escape(
            f"{len(report.artifacts)} artifacts · {report.task or 'classification'} · float "
            f"{_reference_text(report)} · preprocessing "
            f"{report.preprocess or 'as the dataset documents'}"
            f" · gate {verdict} · {report.created} · edgeship {report.edgeship_version}"
        ),
        table=_table(report),
        notes=f"<ul class=note>{notes}</ul>" if notes else "",
        sections="".join(sections),
    )


def write(folder: str | Path, report: Report | None = None) -> Path:
    """Render ``folder/report.json`` (or ``report``) into ``folder/report.html``, atomically."""
    folder = Path(folder)
    report = report or Report.load(folder)
    return _io.write_bytes(folder / PAGE_NAME, render(report).encode())


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1000px; color: #111; }}
h1 {{ font-size: 1.4rem; margin-bottom: .2rem; }} h2 {{ font-size: 1.05rem; margin-top: 2rem; }}
.summary, .note {{ color: #555; font-size: .9rem; }}
table {{ border-collapse: collapse; font-size: .85rem; width: 100%; }}
th, td {{ border-bottom: 1px solid #ddd; padding: .3rem .5rem; text-align: right; }}
th:first-child, td:first-child, td:last-child {{ text-align: left; }}
td {{ white-space: nowrap; }} td:last-child {{ white-space: normal; }}
tr.fail td {{ background: #fee2e2; }}
img.plot {{ max-width: 100%; }}
</style>
<script>
// Self-check for headless rendering: mark each plot loaded or not, and collect page errors.
window.addEventListener("error", (e) => {{
  document.body.dataset.errors = (document.body.dataset.errors || "") + (e.message || e.target.alt) + ";";
}}, true);
window.addEventListener("load", () => {{
  for (const img of document.images) img.dataset.loaded = img.complete && img.naturalWidth > 0 ? "yes" : "no";
  document.body.dataset.ready = "yes";
}});
</script></head>
<body>
<h1>{title}</h1>
<p class="summary">{summary}</p>
{table}
{notes}
{sections}
</body></html>
"""
