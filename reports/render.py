"""report.md (terminal-friendly tables) and a self-contained report.html (figures inlined)."""

from __future__ import annotations

import base64
import html
import re

from reports.variance import rows as variance_rows
from srdd.scan.render import table


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_MARKUP = re.compile(r"([\\`\[\]<>])")


def _one_line(text: str) -> str:
    """Control characters (a newline in a run name) shown as escapes: one cell, one line, always."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _md_text(text: str) -> str:
    """Prose for report.md: one line, and no link, image, HTML or code span taken from a name."""
    return _MARKUP.sub(r"\\\1", _one_line(text))


def _code_block(text: str) -> list[str]:
    """A fence longer than any backtick run inside, so nothing inside can close it."""
    fence = "`" * max(3, 1 + max((len(r) for r in re.findall(r"`+", text)), default=0))
    return [fence, text, fence]


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.2f}%"


def _num(v, fmt: str = "{:.3f}") -> str:
    return "—" if v is None else fmt.format(v)


def _p(v) -> str:
    """A p-value as printed: never "0", which a float underflow (a perfect correlation's t-test) gives and
    no finite sample can; below double precision it reads "< 1e-16"."""
    if v is None:
        return "—"
    return "< 1e-16" if v < 1e-16 else f"{v:.3g}"


VERDICT_HEADER = ["hypothesis", "treatment vs control", "n", "difference", "95% CI", "p", "p (Holm)",
                  "detectable |Δ|", "verdict"]


def _verdict_row(v: dict) -> list[str]:
    arms = f"{v['treatment']} vs {v['control']}" if v.get("treatment") and v.get("control") else "—"
    n = f"{v['n_treatment']} vs {v['n_control']}" if "n_treatment" in v else "—"
    ci = v.get("ci95")
    return [v["hypothesis"], arms, n, _signed_pct(v.get("difference")),
            "—" if ci is None else f"[{_signed_pct(ci[0])}, {_signed_pct(ci[1])}]", _p(v.get("p")),
            _p(v.get("p_holm")), _pct(v.get("detectable_effect")), v["verdict"]]


def _signed_pct(v) -> str:
    return "—" if v is None else f"{100 * v:+.2f}%"


def _family_words(s: dict) -> str:
    """Which hypotheses Holm adjusts across: all of them, or a declared family with the rest exploratory."""
    declared = s.get("confirmatory")
    if declared is None:
        return "p-values Holm-adjusted across the tested hypotheses"
    words = (f"p-values Holm-adjusted across the confirmatory family {', '.join(declared['hypotheses'])} "
             f"(declared: {declared['source'] or 'given'})")
    other = s["analysis"].get("exploratory")
    if other is None:
        return words
    return (f"{words}; {', '.join(other['hypotheses'])} are exploratory (Holm-adjusted among themselves; "
            f"{other['name'] or 'no test'} — {other['why']}), and so is everything else this report shows")


def statistics_line(report: dict) -> str:
    s = report["statistics"]
    a = s["analysis"]
    name = a["name"] or "no test"
    return (f"Arms compared on {report['accuracy']} final accuracy (seeds as replicates): {name} — {a['why']} "
            f"({s['software']}); {_family_words(s)}; alpha {s['alpha']}; "
            f"supported/refuted needs >= {s['min_seeds']} seeds per arm; equivalence by TOST within "
            f"±{s['margin_pp']:g} pp, the smallest effect of interest ({s['margin_source'] or 'given'}); detectable "
            f"|Δ| at 80 % power and the family's strictest level ({a['detectable_effect'] or 'not computed'}). "
            f"Correlation intervals: {s['correlation_interval']}.")


def analysis_sections(report: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """A declared pooled variance: its heterogeneity check and the per-arm analysis beside it (for the
    exploratory family too, where the study declares a confirmatory one)."""
    main = report["statistics"]["analysis"]
    out = []
    for a, of in ((main, ""), (main.get("exploratory") or {}, " (exploratory family)")):
        if "heterogeneity" in a:
            h = a["heterogeneity"]
            out.append((f"Heterogeneity of the arms' residual variances{of} (the pooled analysis assumes none)",
                        ["arms", "residual sd", "Levene p", "Bartlett p"],
                        [[", ".join(a["arms"]), ", ".join(_pct(v) for v in h["residual_sd"]),
                          _num(h["levene_p"], "{:.3g}"), _num(h["bartlett_p"], "{:.3g}")]]))
        if "sensitivity" in a:
            out.append((f"Sensitivity{of}: the same hypotheses with per-arm residual variances", VERDICT_HEADER,
                        [_verdict_row(v) for v in a["sensitivity"]]))
    return out


def sections(report: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for every table; both renderers use the same content."""
    res = [[r["group"], str(r["n"]), r["config"], _pct(r["step0"]), _pct(r["final_mean"]),
            "±" + _pct(r["final_std"]) if r["n"] > 1 else "(1 seed)", _pct(r["best"]),
            _pct(r.get("delta_vs_baseline")), _num(r.get("gap_closed"), "{:.0%}"),
            _num(r.get("sigma_nominal_mean"), "{:.2g}"), _num(r.get("sigma_effective_mean"), "{:.2g}")]
           for r in report["results"]]
    # step 0 and the best validation are LoRA-separate (the only kind measured during training; at step 0 the
    # adapter is zero, so both kinds agree); the final column is the kind the arms are compared on
    out = [("Results", ["group", "n", "config", "step 0", f"final ({report['accuracy']})", "std", "best (separate)",
                        "Δ vs baseline", "gap closed", "σ nominal", "σ effective"], res)]
    rows = report["verdicts"]
    family = ["family"] if any("family" in v for v in rows) else []  # a declared family: each row says its own
    out.append(("Verdicts", VERDICT_HEADER + family, [_verdict_row(v) + [v[k] for k in family] for v in rows]))
    out.append(("Why each verdict", ["hypothesis", *family, "question", "reason"],
                [[v["hypothesis"], *(v[k] for k in family), v["question"], v["reason"]] for v in rows]))
    out += analysis_sections(report)
    if report.get("variance_components"):
        section = report["variance_components"]
        planned = section.get("planned")
        title = ("Variance components of the final accuracy (the family's arms), observed"
                 + (f" and as planned ({planned['pilot']}, {planned['pilot_test_size']} problems, rescaled)"
                    if planned else ""))
        if section["observed"] is not None:
            out.append((title, *variance_rows(section)))
    corr = [[c["scope"], c.get("run", ""), c["x"], c["y"], str(c["n"]), _num(c["pearson_r"]),
             _p(c["pearson_p"]), _num(c["spearman_rho"]), _p(c["spearman_p"]),
             "—" if c["ci95"] is None else f"[{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}]",
             "; ".join(x for x in (c.get("note"), c.get("unit"), c.get("warning")) if x)]
            for c in report["correlations"]]
    out.append(("Correlations", ["scope", "run", "x", "y", "n", "pearson r", "pearson p", "spearman ρ", "spearman p",
                                 "95% CI of r", "note"], corr))
    diff = [[run, key, str(a), str(b)] for run, keys in report["config_diff"].items() for key, (a, b) in keys.items()]
    title = (f"Config differences vs baseline ({report['baseline']})" if report["baseline"] is not None
             else "Config differences vs baseline (no baseline: pass --baseline GROUP to see them)")
    out.append((title, ["run", "key", "baseline", "run"], diff))
    out.append(("Runs left out", ["run", "reason"], [[r["name"], r["reason"]] for r in report["invalid_runs"]]))
    return out


def baseline_line(report: dict) -> str:
    """What the report compares against, and, when nothing, why and how to choose."""
    if report["baseline"] is not None:
        head = f"Baseline: {report['baseline']}."
    else:
        groups = ", ".join(r["group"] for r in report["results"]) or "none"
        head = ("Baseline: none. --baseline was not given (or named no run or group here), and not exactly one "
                "group's name contains 'baseline'; so Δ vs baseline, gap closed and the config differences are "
                f"left empty. Pick one with --baseline GROUP (groups here: {groups}).")
    return f"{head} Target accuracy: {_pct(report['target_accuracy'])}."


def _text_columns(header: list[str], rows: list[list[str]]) -> list[int]:
    """Columns to left-align: names, and any column holding text (a config value, a reason). Right-aligned,
    one long value pushed every short one of its column hundreds of characters right."""
    return [0] + [i for i in range(1, len(header)) if any(len(r[i]) > 24 or r[i][:1].isalpha() for r in rows)]


def markdown(report: dict, figures: dict[str, bytes]) -> str:
    lines = [f"# srdd correlate report — metric {_md_text(report['metric'])}", "", _md_text(baseline_line(report)),
             "", _md_text(statistics_line(report)), ""]
    for title, header, rows in sections(report):
        rows = [[_one_line(str(c)) for c in r] for r in rows]
        lines += [f"## {_md_text(title)}", "",
                  *_code_block(table(header, rows, left=_text_columns(header, rows)) if rows else "(none)"), ""]
    lines += ["## Figures", ""] + [f"![{name}](figures/{name})" for name in figures]
    return "\n".join(lines) + "\n"


def html_page(report: dict, figures: dict[str, bytes]) -> str:
    def tbl(header, rows):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body or '<tr><td>(none)</td></tr>'}</tbody></table>"

    parts = [f"<h1>srdd correlate report — metric {html.escape(report['metric'])}</h1>",
             f"<p>{html.escape(baseline_line(report))}</p>", f"<p>{html.escape(statistics_line(report))}</p>"]
    for title, header, rows in sections(report):
        parts += [f"<h2>{html.escape(title)}</h2>", tbl(header, rows)]
    parts.append("<h2>Figures</h2>")
    for name, png in figures.items():
        parts.append(f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
                     f"<figcaption>{html.escape(name)}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;font-size:13px;margin-bottom:1em}"
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}th{background:#eef}"
             "img{max-width:100%}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>srdd report</title><style>{style}</style>" \
           f"</head><body>{''.join(parts)}</body></html>\n"
