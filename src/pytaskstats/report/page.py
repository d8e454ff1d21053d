"""The page around the charts: one HTML document with its CSS inline, no script.

Building blocks return HTML text; their arguments are plain text (escaped here)
unless the parameter is named ``html``.
"""

from __future__ import annotations

from collections.abc import Sequence

from .fmt import esc

CSS = """
:root{--fg:#1c2530;--muted:#5d6b79;--line:#dfe4ea;--panel:#f4f6f9;--warn:#fff4d6;
--warnline:#d79b00;font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",
"Liberation Sans",sans-serif;color:var(--fg);background:#fff}
body{margin:0 auto;padding:12px 16px 40px;max-width:1200px;line-height:1.4}
h1{font-size:1.35rem;margin:.3rem 0 .2rem;word-break:break-word}
h2{font-size:1.1rem;margin:1.8rem 0 .4rem;padding-bottom:.2rem;border-bottom:1px solid var(--line)}
h3{font-size:.95rem;margin:1rem 0 .3rem}
p{margin:.3rem 0}.sub,.m,figcaption{color:var(--muted)}.sub{font-size:.9rem}
nav{font-size:.85rem;margin:.4rem 0}nav a{margin-right:.9rem;color:#0b5cad}
code{font-size:.9em;background:var(--panel);padding:0 .25em;border-radius:3px;word-break:break-all}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(120px,1fr));gap:8px;
margin:.6rem 0}
.card{background:var(--panel);border-radius:6px;padding:6px 10px}
.card span{display:block;font-size:.78rem;color:var(--muted)}
.card b{display:block;font-size:1.15rem;font-variant-numeric:tabular-nums}
.note{background:var(--warn);border-left:4px solid var(--warnline);padding:5px 10px;margin:.5rem 0;
font-size:.9rem}
.legend{list-style:none;display:flex;flex-wrap:wrap;gap:2px 16px;padding:0;margin:.3rem 0;
font-size:.85rem}
.sw{display:inline-block;width:.8em;height:.8em;border-radius:2px;margin-right:.35em;
vertical-align:-.05em}.sw.out{background:#fff;border:2px solid #c62828;box-sizing:border-box}
figure{margin:.5rem 0}figcaption{font-size:.8rem;margin-top:.15rem}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(400px,1fr));gap:4px 24px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.82rem;font-variant-numeric:tabular-nums;width:100%}
th,td{padding:3px 7px;text-align:right;border-bottom:1px solid var(--line);white-space:nowrap}
th{font-weight:600;background:var(--panel)}
th:first-child,td:first-child{text-align:left}
td.name{max-width:18em;overflow:hidden;text-overflow:ellipsis}
td.bar{width:30%;min-width:60px}tr.total td{font-weight:600}
svg{display:block;overflow:hidden}svg text{font-size:11px;fill:var(--fg)}
svg text.m,svg tspan.m{fill:var(--muted)}
svg text.yl{fill:var(--muted);paint-order:stroke;stroke:#fff;stroke-width:3px;pointer-events:none}
.gl{stroke:var(--line);stroke-width:1;shape-rendering:crispEdges}
.hov{fill:#000;fill-opacity:0}.hov:hover{fill-opacity:.07}
.tl rect.b:hover,.sr rect:hover{opacity:.8}
@media (max-width:640px){body{padding:8px}svg text.odd{display:none}
.grid2{grid-template-columns:1fr}.card b{font-size:1rem}}
"""


def page(title: str, html: str) -> str:
    """The whole document; ``html`` is the body."""
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<link rel="icon" href="data:,">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n"
            f"<body>\n{html}\n</body></html>\n")


def section(ident: str, title: str, html: str) -> str:
    """A titled section (``ident`` is its anchor)."""
    return f'<section id="{esc(ident)}"><h2>{esc(title)}</h2>\n{html}</section>\n'


def nav(links: Sequence[tuple[str, str]]) -> str:
    """Links to the sections: (anchor, text)."""
    return "<nav>" + "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in links) + "</nav>"


def cards(items: Sequence[tuple[str, str, str]]) -> str:
    """Key figures: (label, value, tooltip)."""
    return '<div class="cards">' + "".join(
        f'<div class="card" title="{esc(tip)}"><span>{esc(label)}</span><b>{esc(text)}</b></div>'
        for label, text, tip in items) + "</div>\n"


def note(text: str) -> str:
    """A highlighted remark (something not measured, lost or left out)."""
    return f'<p class="note">{esc(text)}</p>\n'


def para(text: str, cls: str = "sub") -> str:
    """A paragraph of plain text."""
    return f'<p class="{cls}">{esc(text)}</p>\n'


def legend(items: Sequence[tuple[str, str]], *, outline: str | None = None) -> str:
    """A legend: (colour, text) swatches; ``outline``: a red-outline entry's text."""
    lis = [f'<li><span class="sw" style="background:{esc(c)}"></span>{esc(t)}</li>'
           for c, t in items]
    if outline:
        lis.append(f'<li><span class="sw out"></span>{esc(outline)}</li>')
    return f'<ul class="legend">{"".join(lis)}</ul>\n'


def figure(html: str, caption: str) -> str:
    """A chart with its caption."""
    return f"<figure>{html}<figcaption>{esc(caption)}</figcaption></figure>\n"


def table(headers: Sequence[tuple[str, str]], rows: Sequence[Sequence[str]], *,
          total: Sequence[str] | None = None, bar: int | None = None) -> str:
    """A table: headers are (text, tooltip); row cells are HTML (already escaped);
    ``total`` is a last, bold row; column ``bar`` holds bars.  Scrolls sideways in a
    narrow window."""
    head = "".join(f'<th title="{esc(tip)}">{esc(text)}</th>' for text, tip in headers)
    classes = ['class="name"' if i == 0 else 'class="bar"' if i == bar else ""
               for i in range(len(headers))]

    def tr(cells: Sequence[str], cls: str = "") -> str:
        tds = "".join(f"<td {k}>{c}</td>" if k else f"<td>{c}</td>"
                      for k, c in zip(classes, cells, strict=True))
        return f'<tr class="{cls}">{tds}</tr>' if cls else f"<tr>{tds}</tr>"

    body = [tr(row) for row in rows]
    if total is not None:
        body.append(tr(total, "total"))
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>'
            + "\n".join(body) + "</tbody></table></div>\n")


def name_cell(text: str, sub: str = "", tip: str = "") -> str:
    """A first-column cell: a name, muted detail after it, a tooltip."""
    detail = f' <span class="m">{esc(sub)}</span>' if sub else ""
    return f'<span title="{esc(tip or text)}">{esc(text)}</span>{detail}'
