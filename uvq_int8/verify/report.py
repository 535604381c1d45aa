"""Rendering a ``VerifyReport``: JSON file, Markdown tables, a rich table, a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from uvq_int8.backends import NETS
from uvq_int8.util import atomic_write_text
from uvq_int8.errors import UserError
from uvq_int8.verify.results import BASELINE, OUTPUTS, VerifyReport

MB = 1024 * 1024  # the old guide divided sizes by 1024 * 1024; same unit, comparable numbers


def write_json(report: VerifyReport, path: str | Path) -> Path:
    return _write_text(path, json.dumps(report.to_dict(), indent=2) + "\n")


def write_markdown(report: VerifyReport, path: str | Path) -> Path:
    return _write_text(path, markdown(report))


def _write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


# --------------------------------------------------------------------------- numbers

def _f(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if value == 0:
        return "0"
    return f"{value:.{digits}g}"


def _cos(value: float | None) -> str:
    return "–" if value is None else f"{value:.5f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}%"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x"


def _snr(value: float | None) -> str:
    return "exact" if value is None else f"{value:.1f}"


def _status(backend) -> str:
    measured = [c for c in backend.checks if c.value is not None]
    if not measured:
        return "no limits measured" if backend.checks else "no limits"
    failed = backend.failures
    if failed:
        return "FAIL: " + ", ".join(f"{c.net}.{c.metric}" for c in failed)
    return f"pass ({len(measured)} limits)"


SUMMARY_HEADER = ("backend", "size MB", "size vs float32", "quantized tensors c/d/a",
                  "content cos", "distortion cos", "logit Δ max", "logit Δ mean",
                  "score Δ max", "SRCC / PLCC", "ms/frame", "speed vs float32", "limits")


# The console shows the columns that decide a choice; the Markdown has them all.
CONSOLE_COLUMNS = (0, 1, 2, 4, 5, 6, 8, 10, 11, 12)


def summary_rows(report: VerifyReport) -> list[tuple[str, ...]]:
    """One row per backend against float32 on the real frames."""
    rows = []
    for name, b in report.backends.items():
        e2e = b.end_to_end.get("vs_float32")
        cos = {net: b.nets[net]["frames"]["vs_float32"]["features"].cosine_min
               for net in ("content", "distortion")}
        cov = "/".join(str(b.files[net].quantized_tensors) for net in NETS)
        corr = "–"
        if e2e and (e2e.score_srcc is not None or e2e.score_plcc is not None):
            corr = f"{_f(e2e.score_srcc, 4)} / {_f(e2e.score_plcc, 4)}"
        lat = b.latency
        rows.append((
            name, f"{b.size_bytes / MB:.2f}", _ratio(b.size_vs_float32), cov,
            _cos(cos["content"]), _cos(cos["distortion"]),
            _f(e2e.logit_delta_max if e2e else None), _f(e2e.logit_delta_mean if e2e else None),
            _f(e2e.score_delta_max if e2e else None), corr,
            f"{lat.frame_ms:.0f}" if lat and lat.frame_ms else "–",
            _ratio(lat.speed_vs_float32 if lat else None), _status(b)))
    return rows


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- markdown

def _setting_line(report: VerifyReport) -> str:
    m, s = report.machine, report.settings
    features = f" ({', '.join(m['cpu_features'])})" if m.get("cpu_features") else ""
    pk = m.get("packages", {})
    return (f"{m.get('cpu')}{features}, {m.get('cores')} cores, Python {m.get('python')}, "
            f"ai-edge-litert {pk.get('ai-edge-litert')}; {s['threads']} interpreter threads; "
            f"inputs: {s['frames_description']} in {s['clips']} clip(s), "
            f"{s['random_inputs']} standard-normal input(s) per net; latency: median of "
            f"{s['runs']} run(s) after {s['warmup']} warm-up.")


def markdown(report: VerifyReport) -> str:
    """The report as Markdown; the first table is the one docs/ quotes."""
    out = [f"## uvq-int8 verify ({report.created}, schema {report.schema_version})", "",
           _setting_line(report), ""]
    built = report.settings.get("built_from") or {}
    if any(built.values()):
        out += ["Models built from: " + ", ".join(
            f"{net} `{Path(c['path']).name}` (sha256 {str(c.get('sha256'))[:12]})"
            for net, c in built.items() if c and c.get("path")) + ".", ""]
    pt = report.pytorch
    if pt.get("available"):
        out += ["PyTorch reference: " + ", ".join(
            f"{n} `{Path(p).name}`" for n, p in pt["checkpoints"].items()) + ".", ""]
    else:
        out += [f"PyTorch reference: skipped ({pt.get('reason')}).", ""]

    out += ["### Backends against float32 (real frames)", "",
            "Cosine: smallest per-frame cosine similarity of the net's features with "
            "float32's on the same input. Δ: absolute difference of the end-to-end logit "
            "(pre-tanh) and score per frame. SRCC/PLCC: across clips, of mean scores "
            "(needs 3 or more clips). Quantized tensors: tensors stored narrower than float32 "
            "(int8/int4 with quantization parameters, float16 constants) in "
            "content/distortion/aggregation; for int8 this is the old guide's count.", "",
            _table(SUMMARY_HEADER, summary_rows(report)), ""]

    out += ["### Per net, against float32", "",
            "Each net gets the same input as float32's net (random: standard normal; frames: "
            "the real frames' net inputs; aggregation is fed float32's features), so only "
            "its own error shows. Mean rel = mean of |Δ| / (|float32| + 1e-8).", ""]
    out += [_net_table(report, "vs_float32"), ""]
    if pt.get("available"):
        out += ["### Against the PyTorch nets", "",
                "| backend | logit Δ max | logit Δ mean | score Δ max | content cos | "
                "distortion cos |", "|---|---|---|---|---|---|"]
        for name, b in report.backends.items():
            e = b.end_to_end.get("vs_pytorch")
            if e is None:
                continue
            c = b.nets["content"]["frames"]["vs_pytorch"]["features"].cosine_min
            d = b.nets["distortion"]["frames"]["vs_pytorch"]["features"].cosine_min
            out.append(f"| {name} | {_f(e.logit_delta_max)} | {_f(e.logit_delta_mean)} | "
                       f"{_f(e.score_delta_max)} | {_cos(c)} | {_cos(d)} |")
        out.append("")

    out += ["### Size and latency", "",
            _table(("backend", "content MB", "distortion MB", "aggregation MB", "reduction",
                    "tensors by dtype (content)", "content ms", "distortion ms",
                    "aggregation ms", "fps"),
                   [(n, *(f"{b.files[net].size_bytes / MB:.2f}" for net in NETS),
                     _pct(b.reduction_pct),
                     ", ".join(f"{k} {v}" for k, v in b.files["content"].tensors_by_dtype.items()),
                     *(_f(b.latency.net_ms.get(net)) if b.latency else "–" for net in NETS),
                     _f(b.latency.fps) if b.latency else "–")
                    for n, b in report.backends.items()]), ""]

    if report.guide:
        out += ["### The old guide's INT8 claims next to ours", "",
                "The guide's INT8 is litert-torch's `full_dynamic_recipe(INT8, CHANNELWISE)`: "
                "dynamic-range int8, the scheme of our `int8` backend. Each row compares the "
                "same quantity on the same kind of input; the conditions differ as stated.", "",
                _table(("claim", "guide", "ours (int8)", "guide's conditions", "our conditions"),
                       _guide_rows(report.guide)), ""]

    for name, b in report.backends.items():
        if b.auto:
            out += auto_section(name, b.auto)

    checks = [c for b in report.backends.values() for c in b.checks]
    if checks:
        out += ["### Limits", "",
                _table(("backend", "net", "metric", "vs", "limit", "value", "result", "basis"),
                       [(c.backend, c.net, c.metric, c.reference,
                         ("≥ " if c.bound == "min" else "≤ ") + _f(c.limit, 4),
                         _f(c.value, 4) if c.metric != "cosine_min" else _cos(c.value),
                         "not measured" if c.value is None else ("pass" if c.passed else "FAIL"),
                         c.basis) for c in checks]), ""]
    return "\n".join(out)


def promise_paragraph(record: Mapping[str, Any]) -> str:
    """What an auto build promises and what the promise rests on (runtime/promise.py)."""
    from uvq_int8.runtime.promise import Promise

    if record.get("auto_version", 1) < 2 or not record.get("promise"):
        return ("**No promise**: this set was made by auto version 1, which chose and measured "
                "on the same synthetic frames; rebuild it for a confirmed promise.")
    promise = Promise.from_dict(record["promise"])
    basis = record.get("content_basis") or {}
    parts = []
    for split in ("search", "confirmation"):
        info = basis.get(split) or {}
        images = info.get("images")
        count = len(images) if isinstance(images, list) else images
        parts.append(f"{split}: {info.get('frames', '?')} frames from {count or '?'} "
                     f"independent {'videos' if info.get('source') == 'videos' else 'images'} "
                     f"({info.get('source', '?')})")
    text = f"**Promise**: {promise.sentence()}. It rests on " + "; ".join(parts) + "."
    if record.get("rejected"):
        r = record["rejected"]
        text += (f" The searched choice (content {r['labels']['content']}, distortion "
                 f"{r['labels']['distortion']}) had bound "
                 f"{r['confirmation'].get('bound')} on the confirmation frames and was "
                 f"rejected.")
    return text


def auto_section(backend: str, record: dict[str, Any]) -> list[str]:
    """What the auto search chose and why: its candidates and the sensitivity tables."""
    from uvq_int8.convert.sensitivity import SensitivityTable

    m = record["measured"]
    out = [f"### {backend}: the configuration the build's search chose", "",
           f"Budget (`--max-logit-delta`) {record['max_logit_delta']:g}, measured on "
           f"{record['validation_frames']} validation frames against the float32 files: "
           f"content **{record['labels']['content']}**, distortion "
           f"**{record['labels']['distortion']}**; logit Δ max {m['logit_delta_max']:.4f} "
           f"(mean {m['logit_delta_mean']:.4f}); modelled {record['modelled_speedup']:.2f}x "
           f"float32's end-to-end time. Candidates (each with the other net float32):", "",
           _table(("net", "candidate", "modelled ms/frame", "logit Δ max", "logit Δ mean",
                   "feature rel. error"),
                  [(c["net"], c["label"], f"{c['modelled_ms']:.1f}",
                    f"{c['logit_delta_max']:.4f}", f"{c['logit_delta_mean']:.4f}",
                    f"{c['feature_rel_error']:.4f}") for c in record["candidates"]]), ""]
    out += [promise_paragraph(record), ""]
    tables = record.get("sensitivity") or {}
    if tables:
        out += [f"### {backend}: sensitivity per op group", "",
                "Each op group alone in full-integer int8 (the rest of the net float32, the "
                "other net float32), measured on the validation frames; the last row is the "
                "whole net in int8. A group's own error next to its share of the time is what "
                "the mixed search trades.", ""]
        for net in ("content", "distortion"):
            if net in tables:
                out += [SensitivityTable.from_dict(tables[net]).to_markdown(), ""]
    return out


def _guide_rows(guide: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    rows = []
    previous = ("", "")
    for g in guide:
        # Long conditions repeat from row to row; say them once.
        theirs = g["conditions"]
        ours = g["ours_conditions"]
        theirs = "as above" if theirs and theirs == previous[0] else theirs
        ours = "as above" if ours and ours == previous[1] else ours
        previous = (g["conditions"], g["ours_conditions"])
        rows.append((g["claim"], _claim_value(g["value"], g["unit"]),
                     _claim_value(g["ours"], g["unit"]), theirs, ours))
    return rows


def _claim_value(value: Any, unit: str) -> str:
    if value is None:
        return "–"
    if unit == "%":
        return f"{value:.2f}%"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "tensors":
        return f"{int(value)}"
    return _f(value, 4)


def _net_table(report: VerifyReport, reference: str) -> str:
    rows = []
    for name, b in report.backends.items():
        if name == BASELINE and reference == "vs_float32":
            continue
        for net in NETS:
            for kind in ("random", "frames"):
                for output in OUTPUTS[net]:
                    s = b.nets[net][kind].get(reference, {}).get(output)
                    if s is None or not s.samples:
                        continue
                    rows.append((name, net, kind, output, _f(s.max_abs), _f(s.mean_abs),
                                 _pct(s.mean_rel * 100), _cos(s.cosine), _snr(s.snr_db)))
    return _table(("backend", "net", "input", "output", "max abs", "mean abs", "mean rel",
                   "cosine", "SNR dB"), rows)


# --------------------------------------------------------------------------- console

def print_summary(report: VerifyReport, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:  # piped or captured: no reason to wrap at 80 columns
            console = Console(width=200)
    table = Table(title="uvq-int8 verify: backends against float32", caption=_setting_line(report))
    for i in CONSOLE_COLUMNS:
        table.add_column(SUMMARY_HEADER[i], overflow="fold")
    for row in summary_rows(report):
        style = "red" if row[-1].startswith("FAIL") else None
        table.add_row(*(row[i] for i in CONSOLE_COLUMNS), style=style)
    console.print(table)
    if not report.pytorch.get("available"):
        console.print(f"PyTorch comparison skipped: {report.pytorch.get('reason')}")


# --------------------------------------------------------------------------- plot

def write_plot(report: VerifyReport, path: str | Path) -> Path:
    """Speed against logit error per backend, and per-frame scores and logits by backend."""
    try:
        import matplotlib
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install 'uvq-int8[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    colors = {name: f"C{i}" for i, name in enumerate(report.backends)}
    floor = 1e-7  # float32 against itself is 0: draw it at the floor of the log axis
    ax = axes[0]
    for name, b in report.backends.items():
        e2e = b.end_to_end.get("vs_float32")
        if not (b.latency and b.latency.frame_ms and e2e):
            continue
        y = max(e2e.logit_delta_max, floor)
        ax.scatter(b.latency.frame_ms, y, s=40, color=colors[name])
        label = name if e2e.logit_delta_max > 0 else f"{name} (0)"
        ax.annotate(label, (b.latency.frame_ms, y), textcoords="offset points", xytext=(5, 4))
    ax.set_yscale("log")
    ax.set_xlabel(f"ms per frame, lower is faster ({report.settings['threads']} threads)")
    ax.set_ylabel("largest logit Δ vs float32")
    ax.set_title("speed against error")

    ax = axes[1]
    for name, b in report.backends.items():
        values = [v for c in b.clips for v in c.scores]
        ax.plot(range(len(values)), values, marker="o", ms=3, label=name, color=colors[name])
    if report.pytorch.get("available"):
        values = [v for c in report.pytorch["clips"] for v in c["scores"]]
        ax.plot(range(len(values)), values, "k--", lw=1, label="PyTorch")
    ax.set_ylabel("score")
    ax.set_title("per-frame score by backend")

    # Scores near tanh's ends hide differences; the logit delta shows them.
    ax = axes[2]
    for name, b in report.backends.items():
        e2e = b.end_to_end.get("vs_float32")
        if e2e is None or name == BASELINE:
            continue
        values = [v for c in b.clips for v in e2e.per_frame_logit_delta[c.name]]
        ax.plot(range(len(values)), values, marker="o", ms=3, label=name, color=colors[name])
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("logit - float32's logit")
    ax.set_title("per-frame logit Δ by backend")
    for ax in axes[1:]:
        ax.set_xlabel("frame (clips in order)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"uvq-int8 verify, {report.settings['frames_description']}", fontsize=10)
    fig.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return path
