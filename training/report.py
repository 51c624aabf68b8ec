"""The evaluation report as data (sections of text, tables and figures), written as Markdown and as one
self-contained HTML page: figures inlined as data: URIs, no scripts, no links, so it opens from disk
without a network."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (PNG file name in the out folder, caption)
    warnings: list[str] = field(default_factory=list)
    skipped: str | None = None  # why the section does not apply, when it does not

    def text(self, line: str) -> None:
        self.paragraphs.append(line)

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.tables.append(Table(header, rows))

    def figure(self, file: str, caption: str) -> None:
        self.figures.append((file, caption))


@dataclass
class Report:
    title: str
    summary: list[str]
    sections: list[Section]

    def markdown(self) -> str:
        out = [f"# {self.title}", "", *[f"- {s}" for s in self.summary], ""]
        for sec in self.sections:
            out += [f"## {sec.title}", ""]
            if sec.skipped:
                out += [f"*Skipped: {sec.skipped}*", ""]
                continue
            out += [f"> **Warning:** {w}\n" for w in sec.warnings]
            out += [p + "\n" for p in sec.paragraphs]
            for t in sec.tables:
                out += ["| " + " | ".join(t.header) + " |", "|" + "---|" * len(t.header)]
                out += ["| " + " | ".join(r) + " |" for r in t.rows]
                out.append("")
            out += [f"![{caption}]({file})\n" for file, caption in sec.figures]
        return "\n".join(out)

    def html(self, folder: Path) -> str:
        """The page, with every figure read from `folder` and inlined."""
        e = html.escape
        body = [f"<h1>{e(self.title)}</h1>", "<ul>", *[f"<li>{e(s)}</li>" for s in self.summary], "</ul>"]
        for sec in self.sections:
            body.append(f"<section><h2>{e(sec.title)}</h2>")
            if sec.skipped:
                body.append(f'<p class="skipped">Skipped: {e(sec.skipped)}</p></section>')
                continue
            body += [f'<p class="warning">Warning: {e(w)}</p>' for w in sec.warnings]
            body += [f"<p>{e(p)}</p>" for p in sec.paragraphs]
            for t in sec.tables:
                head = "".join(f"<th>{e(h)}</th>" for h in t.header)
                rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in t.rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            for file, caption in sec.figures:
                data = base64.b64encode((folder / file).read_bytes()).decode("ascii")
                body.append(
                    f'<figure><img src="data:image/png;base64,{data}" alt="{e(caption)}">'
                    f"<figcaption>{e(caption)}</figcaption></figure>"
                )
            body.append("</section>")
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{e(self.title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body)
            + "\n</body></html>\n"
        )

    def write(self, folder: Path) -> None:
        (folder / "report.md").write_text(self.markdown(), encoding="utf-8")
        (folder / "report.html").write_text(self.html(folder), encoding="utf-8")


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.8em 0}td,th{border:1px solid #ccc;padding:.25em .6em;"
    "text-align:left;font-variant-numeric:tabular-nums}th{background:#f3f3f3}"
    "figure{margin:1em 0}img{max-width:100%}figcaption{font-size:.9em;color:#555}"
    ".warning{background:#fff3cd;border-left:4px solid #e0a800;padding:.5em}.skipped{color:#777;font-style:italic}"
)
