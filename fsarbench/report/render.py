"""Render a :class:`~fsarbench.report.tables.Table` as Markdown, LaTeX (booktabs) or CSV."""

from __future__ import annotations

import io
from itertools import groupby

from fsarbench.report.markdown import md_cell_text
from fsarbench.report.published import Citation
from fsarbench.report.records import Entry
from fsarbench.report.tables import Cell, Table
from fsarbench.results import stale_reasons
from fsarbench.stats.rounding import fixed

__all__ = ["FORMATS", "render", "render_markdown", "render_latex", "render_csv"]

FORMATS = ("md", "latex", "csv")


def _md_cell(cell: Cell) -> str:
    text = md_cell_text(cell.text) + ("\\*" if cell.significant else "")
    if cell.mark == "best":
        return f"**{text}**"
    if cell.mark == "second":
        return f"<u>{text}</u>"
    return text


def render_markdown(table: Table, citation: Citation | None = None) -> str:
    """GitHub Markdown: best in ``**bold**``, second ``<u>underlined</u>``."""
    from tabulate import tabulate

    spec = table.spec
    head = [*spec.label_columns, "Source", *(f"{c.group} {c.label}" for c in spec.columns)]
    body = [
        [*map(md_cell_text, r.labels), r.source, *(_md_cell(c) for c in r.cells)]
        for r in table.rows
    ]
    out = [
        f"**Table {spec.table}.** {spec.caption}",
        "",
        tabulate(body, head, tablefmt="github", disable_numparse=True),
        "",
    ]
    out += [f"- {n}" for n in table.notes]
    if citation is not None:
        out.append(f"- Published numbers: {citation}")
    if table.references:
        out += ["", "References:", ""] + [f"- {ref}" for ref in table.references]
    return "\n".join(out) + "\n"


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\^{}",
    "<": r"\textless{}",  # OT1, LaTeX's default encoding, prints < and > as ¡ and ¿
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    "±": r"$\pm$",
    "✓": r"\checkmark",
    "²": r"\textsuperscript{2}",
    "λ": r"$\lambda$",
    "α": r"$\alpha$",
    "—": "---",
    "†": r"\dag{}",
    "‡": r"\ddag{}",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX specials and map the few non-ASCII symbols the tables use."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def _latex_cell(cell: Cell) -> str:
    text = latex_escape(cell.text) + ("$^{*}$" if cell.significant else "")
    if cell.mark == "best":
        return rf"\textbf{{{text}}}"
    if cell.mark == "second":
        return rf"\underline{{{text}}}"
    return text


def _latex_header(table: Table) -> list[str]:
    spec = table.spec
    lead = len(spec.label_columns) + 1
    groups = [(g, len(list(cols))) for g, cols in groupby(spec.columns, key=lambda c: c.group)]
    top, rules, start = ["" for _ in range(lead)], [], lead + 1
    for g, n in groups:
        top.append(rf"\multicolumn{{{n}}}{{c}}{{{latex_escape(g)}}}")
        rules.append(rf"\cmidrule(lr){{{start}-{start + n - 1}}}")
        start += n
    names = [latex_escape(x) for x in (*spec.label_columns, "Source")]
    names += [latex_escape(c.label) for c in spec.columns]
    return [" & ".join(top) + r" \\", " ".join(rules), " & ".join(names) + r" \\"]


def render_latex(table: Table, citation: Citation | None = None) -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs,amssymb,graphicx}``)."""
    spec = table.spec
    cols = "l" * (len(spec.label_columns) + 1) + "c" * len(spec.columns)
    caption = latex_escape(spec.caption)
    if citation is not None:
        caption += latex_escape(f" Published numbers: {citation}")
    lines = [
        r"% requires \usepackage{booktabs}, \usepackage{amssymb} and \usepackage{graphicx}",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{caption}}}",
        rf"\label{{tab:fsarbench-table{spec.table}}}",
        r"\resizebox{\linewidth}{!}{%",
        rf"\begin{{tabular}}{{{cols}}}",
        r"\toprule",
    ]
    lines += _latex_header(table)
    lines.append(r"\midrule")
    for r in table.rows:
        cells = [latex_escape(x) for x in (*r.labels, r.source)] + [_latex_cell(c) for c in r.cells]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}"]
    if table.notes:
        notes = " ".join(latex_escape(n) for n in table.notes)
        lines.append(rf"\par\smallskip{{\footnotesize {notes}}}")
    if table.references:
        # one \par per reference: "\\ [1]" would read [1] as the line break's spacing argument
        refs = "".join(rf"\par {latex_escape(ref)}" for ref in table.references)
        lines.append(rf"\par\smallskip{{\footnotesize References.{refs}\par}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def render_csv(table: Table, citation: Citation | None = None) -> str:
    """Long format: one line per cell, with its marks and (for runs) CI, seed spread, test
    episodes (count, episode seed, queries per class: a table can mix them), track, frame
    protocol and the way and shot its model was trained at, the system that
    fills it (``otam ‡stale``: a paper row names the row, not the system) and, for a stale
    one, why it is stale (as ``summary.csv``'s column ``stale``)."""
    import csv

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "table",
            "row",
            "source",
            "group",
            "column",
            "dataset",
            "way",
            "shot",
            "value",
            "ci95",
            "seed_std",
            "train_seeds",
            "mark",
            "significant",
            "citation",
            "episodes",
            "episode_seed",
            "queries",
            "track",
            "protocol",
            "train_way",
            "train_shot",
            "system",
            "stale",
        ]
    )
    cite = citation.key if citation is not None else ""
    for r in table.rows:
        for col, c in zip(table.spec.columns, r.cells):
            e = c.entry
            w.writerow(
                [
                    table.spec.table,
                    r.labels[0],
                    r.source,
                    col.group,
                    col.label,
                    e.setting.dataset if e else col.dataset,
                    col.way,
                    col.shot,
                    _csv_value(c, table.spec.decimals),
                    fixed(e.ci95, 4) if e else "",
                    fixed(e.seeds.std, 4) if e and e.seeds else "",
                    len(e.records) if e else "",
                    c.mark,
                    int(c.significant),
                    (r.citation or cite) if r.source == "published" else "",
                    e.setting.episodes if e else "",
                    e.setting.seed if e else "",
                    e.setting.queries if e else "",
                    e.setting.track if e else "",
                    e.setting.protocol if e else "",
                    _trained(e, "train_way"),
                    _trained(e, "train_shot"),
                    e.system if e else "",
                    _stale_text(e),
                ]
            )
    return buf.getvalue()


def _trained(entry: Entry | None, name: str) -> int | str:
    """The way or shot a run cell's model was trained at (``""``: a published cell, or a
    record that does not say)."""
    value = getattr(entry.records[0], name) if entry is not None else None
    return "" if value is None else value


def _csv_value(c: Cell, decimals: int) -> str:
    """A cell's number for the CSV: a published one as printed (``74.50``), a run's to 4
    places like its ``ci95``."""
    if c.value is None:
        return ""
    return fixed(c.entry.accuracy, 4) if c.entry is not None else fixed(c.value, decimals)


def _stale_text(entry: Entry | None) -> str:
    """Why a run cell's entry is stale (``"code:harness;accepted-stale"``); ``""`` if current."""
    if entry is None or not entry.stale:
        return ""
    return ";".join(sorted({w for r in entry.records for w in stale_reasons(r)}))


def render(table: Table, fmt: str, citation: Citation | None = None) -> str:
    """Dispatch on ``fmt`` (one of :data:`FORMATS`)."""
    renderers = {"md": render_markdown, "latex": render_latex, "csv": render_csv}
    if fmt not in renderers:
        raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
    return renderers[fmt](table, citation)
