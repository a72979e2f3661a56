"""The course's HTML pages: compare.html (the base and the tuned model side by side, with the style measurements and
the run manifest), and the page shell that it and the sovereignty audit's report share.

One self-contained file: inline CSS and an inline SVG chart, no script, no font, no image from the network (a
Content-Security-Policy in the page forbids loading anything). Every piece of text is HTML-escaped, so model output
such as "<script>" shows as text.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

from .atomic import write_text
from .stylometry import FEATURES, FUNCTION_WORD_FEATURE

_CSS = """
body { font-family: Georgia, 'Times New Roman', serif; margin: 2rem auto; max-width: 1200px; padding: 0 1rem;
       color: #1b1b1b; background: #ffffff; line-height: 1.45; }
h1 { font-size: 1.7rem; margin-bottom: 0.2rem; } h2 { margin-top: 2.2rem; border-bottom: 2px solid #ddd; }
.subtitle, .notice { color: #555; } .notice { font-size: 0.9rem; border-left: 4px solid #c9a227; padding-left: 0.8rem; }
.summary { display: flex; gap: 1.2rem; flex-wrap: wrap; }
.figure { border: 1px solid #ccc; border-radius: 6px; padding: 0.6rem 1rem; min-width: 14rem; }
.figure b { font-size: 1.3rem; }
.pair { margin: 1.5rem 0; border: 1px solid #ddd; border-radius: 6px; padding: 0.8rem 1rem; }
.prompt { background: #f4f4f4; margin: 0 0 0.8rem 0; padding: 0.6rem 0.9rem; white-space: pre-wrap; }
.columns { display: grid; grid-template-columns: 1fr 1fr; gap: 1.2rem; }
.column h4 { margin: 0 0 0.4rem 0; font-family: sans-serif; font-size: 0.9rem; text-transform: uppercase; }
.column.base h4 { color: #1f5fa8; } .column.tuned h4 { color: #b3401f; }
.column.base { border-top: 4px solid #1f5fa8; } .column.tuned { border-top: 4px solid #b3401f; }
.column p { margin: 0.4rem 0; white-space: pre-wrap; }
table { border-collapse: collapse; font-family: sans-serif; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
pre { background: #f7f7f7; padding: 0.8rem; white-space: pre-wrap; overflow-wrap: anywhere; font-size: 0.8rem; }
"""

BASE_COLOUR, TUNED_COLOUR = "#1f5fa8", "#b3401f"


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _paragraphs(text: str) -> str:
    parts = [p for p in str(text).split("\n\n") if p.strip()] or ["(empty)"]
    return "".join(f"<p>{_e(p.strip())}</p>" for p in parts)


def _pairs(prompts: list[str], base: list[str], tuned: list[str], names: tuple[str, str]) -> str:
    out = []
    for i, (prompt, b, t) in enumerate(zip(prompts, base, tuned), start=1):
        out.append(
            f'<section class="pair" id="prompt-{i}"><h3>Prompt {i}</h3>'
            f'<blockquote class="prompt">{_e(prompt)}</blockquote><div class="columns">'
            f'<div class="column base"><h4>{_e(names[0])}</h4>{_paragraphs(b)}</div>'
            f'<div class="column tuned"><h4>{_e(names[1])}</h4>{_paragraphs(t)}</div></div></section>'
        )
    return "\n".join(out)


def _table(rows: list[dict]) -> str:
    head = ("<tr><th>feature</th><th>author (mean)</th><th>base</th><th>base |z|</th>"
            "<th>tuned</th><th>tuned |z|</th></tr>")
    body = []
    for row in rows:
        if row.get("treatment") == "left out":
            text = (f"<td>{row['author']:.3f}</td><td colspan=4>left out: no spread in the author's passages, "
                    "so the reference cannot measure it</td>")
        elif row["feature"] in FEATURES:
            cells = [row["author"], row["base"], abs(row["base_z"]), row["tuned"], abs(row["tuned_z"])]
            text = "".join(f"<td>{v:.3f}</td>" for v in cells)
        else:  # the function-word Delta and the overall distance are already |z| means
            text = (f"<td>0 (by definition)</td><td colspan=2>{row['base']:.3f}</td>"
                    f"<td colspan=2>{row['tuned']:.3f}</td>")
        strong = row["feature"] == "distance"
        label = f"<b>{_e(row['label'])}</b>" if strong else _e(row["label"])
        if row.get("treatment") == "floored":
            label += " <small>(spread floored)</small>"
        body.append(f"<tr><td>{label}</td>{text}</tr>")
    return f'<table class="stylometry">{head}{"".join(body)}</table>'


def bar_chart_svg(rows: list[dict], width: int = 760) -> str:
    """A horizontal bar chart (inline SVG) of each feature's |z| for the base and the tuned model: how many of the
    author's own passage-to-passage standard deviations each output lies from the author."""
    features = [r for r in rows if (r["feature"] in FEATURES or r["feature"] in (FUNCTION_WORD_FEATURE, "distance"))
                and r.get("treatment") != "left out"]
    left, right, top, bar, gap = 300, 30, 50, 11, 12
    height = top + len(features) * (2 * bar + gap) + 60
    peak = max(max(abs(r["base_z"]), abs(r["tuned_z"])) for r in features) or 1.0
    scale = (width - left - right) / peak
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="style distance per feature" font-family="sans-serif" font-size="12">',
             f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">'
             "Distance from the author, feature by feature (lower is closer)</text>"]
    for i, row in enumerate(features):
        y = top + i * (2 * bar + gap)
        parts.append(f'<text x="{left - 8}" y="{y + bar + 4}" text-anchor="end">{_e(row["label"])}</text>')
        for j, (key, colour) in enumerate((("base_z", BASE_COLOUR), ("tuned_z", TUNED_COLOUR))):
            value = abs(row[key])
            parts.append(f'<rect x="{left}" y="{y + j * bar}" width="{value * scale:.1f}" height="{bar - 1}" '
                         f'fill="{colour}"><title>{key[:-2]}: {value:.3f}</title></rect>')
            parts.append(f'<text x="{left + value * scale + 4:.1f}" y="{y + j * bar + bar - 2}" '
                         f'font-size="10">{value:.2f}</text>')
    axis_y = top + len(features) * (2 * bar + gap)
    parts.append(f'<line x1="{left}" y1="{top - 5}" x2="{left}" y2="{axis_y}" stroke="#333"/>')
    parts.append(f'<line x1="{left}" y1="{axis_y}" x2="{width - right}" y2="{axis_y}" stroke="#333"/>')
    parts.append(f'<text x="{(left + width - right) / 2}" y="{axis_y + 22}" text-anchor="middle">'
                 "|z|: distance in units of the author's passage-to-passage standard deviation</text>")
    for j, (name, colour) in enumerate((("base model", BASE_COLOUR), ("tuned model", TUNED_COLOUR))):
        x = left + j * 130
        parts.append(f'<rect x="{x}" y="{axis_y + 34}" width="12" height="12" fill="{colour}"/>')
        parts.append(f'<text x="{x + 18}" y="{axis_y + 44}">{name}</text>')
    parts.append("</svg>")
    return "".join(parts)


def compare_html(*, title: str, prompts: list[str], base: list[str], tuned: list[str], rows: list[dict],
                 manifest: dict, figures: dict[str, str] | None = None, notice: str = "",
                 measured_on: int | None = None, style_note: str = "",
                 names: tuple[str, str] = ("Base model", "Tuned model (base + LoRA adapter)")) -> str:
    """The page as a string. `rows` come from stylometry.comparison_rows with profiles named "base" and "tuned",
    measured on the completions of `measured_on` prompts (the ones shown and more); `figures` are headline numbers
    {label: formatted value}; `style_note` says which features the distance leaves out or floors
    (AuthorReference.describe_treatment)."""
    if not (len(prompts) == len(base) == len(tuned)):
        raise ValueError(f"need one base and one tuned completion per prompt: got {len(prompts)} prompts, "
                         f"{len(base)} base and {len(tuned)} tuned completions")
    scope = ""
    if measured_on and measured_on > len(prompts):
        scope = (f" (all the completions of {measured_on} held-out prompts: the {len(prompts)} above and "
                 f"{measured_on - len(prompts)} more)")
    summary = "".join(f'<div class="figure">{_e(k)}<br><b>{_e(v)}</b></div>' for k, v in (figures or {}).items())
    return html_page(title, f"""<p class="subtitle">The same prompts, the same seed and the same sampling settings: the base model on the left,
the model with the style adapter on the right.</p>
{f'<p class="notice">{_e(notice)}</p>' if notice else ''}
<div class="summary">{summary}</div>
<h2>Side by side</h2>
{_pairs(prompts, base, tuned, names)}
<h2>Style measurements</h2>
<p>Each feature of the generated text{_e(scope)} against the author's reference (its mean over the author's passages).
|z| is the difference in units of the author's own passage-to-passage standard deviation; the distance is the mean
|z| over the seven features (the function words count as one, by their mean |z|, Burrows' Delta). A spread below
half of the same feature's spread across many authors is raised to that floor; a feature with no spread at all is
left out.</p>
{f'<p class="notice style-note">{_e(style_note)}</p>' if style_note else ''}
{_table(rows)}
<div class="chart">{bar_chart_svg(rows)}</div>
<h2>Run manifest</h2>
<pre class="manifest">{_e(json.dumps(manifest, indent=2, ensure_ascii=False))}</pre>""")


def html_page(title: str, body: str, css: str = "") -> str:
    """A self-contained page: the title as heading, then `body` (HTML the caller escaped), the course's CSS plus
    `css`, and a Content-Security-Policy that forbids loading anything (no script, font or image from anywhere)."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{_CSS}{css}</style></head>
<body>
<h1>{_e(title)}</h1>
{body}
</body></html>
"""


def write_compare_html(path: str | Path, **kwargs) -> Path:
    """Write compare_html(**kwargs) to path atomically (a half-written page never replaces a good one)."""
    return write_text(path, compare_html(**kwargs))


def escape(text) -> str:
    """HTML-escaped text (quotes too): what every page of the course does with text it did not write itself."""
    return _e(text)
