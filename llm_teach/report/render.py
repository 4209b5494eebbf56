"""A report as data (sections of text, tables and figures) and its two renderings: one
self-contained HTML page (figures embedded as data: URIs, no network) and Markdown.

Rendering goes through Jinja2's SandboxedEnvironment with autoescaping: run directories hold
model-written text (completions, generated problems), which must reach the page as text,
never as markup or template code.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2.sandbox import SandboxedEnvironment


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""


@dataclass
class Figure:
    png: bytes
    caption: str

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode()


@dataclass
class Section:
    title: str
    anchor: str
    text: list[str] = field(default_factory=list)  # paragraphs
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)  # (label, relative href)
    samples: list[dict[str, Any]] = field(default_factory=list)  # {"title", "text", "correct": bool|None}


@dataclass
class Report:
    title: str
    kind: str
    run_dir: str
    sections: list[Section] = field(default_factory=list)


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ r.title }}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}img{max-width:100%;display:block;margin:.5em 0}figcaption{color:#555;font-size:.9em}
.ok{color:#17702d}.bad{color:#b3261e}pre{white-space:pre-wrap;background:#f7f7f7;padding:.5em}
nav a{margin-right:1em}
</style></head><body>
<h1>{{ r.title }}</h1>
<p>Run kind <code>{{ r.kind }}</code> in <code>{{ r.run_dir }}</code></p>
<nav>{% for s in r.sections %}<a href="#{{ s.anchor }}">{{ s.title }}</a>{% endfor %}</nav>
{% for s in r.sections %}
<section id="{{ s.anchor }}"><h2>{{ s.title }}</h2>
{% for p in s.text %}<p>{{ p }}</p>{% endfor %}
{% for label, href in s.links %}<p><a href="{{ href }}">{{ label }}</a></p>{% endfor %}
{% for t in s.tables %}<table>{% if t.caption %}<caption>{{ t.caption }}</caption>{% endif %}
<tr>{% for c in t.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in t.rows %}<tr>{% for v in row %}<td>{{ fmt(v) }}</td>{% endfor %}</tr>{% endfor %}</table>
{% endfor %}
{% for f in s.figures %}<figure><img src="{{ f.data_uri }}" alt="{{ f.caption }}"><figcaption>{{ f.caption }}</figcaption></figure>{% endfor %}
{% for x in s.samples %}<h3 class="{{ 'ok' if x.correct else ('bad' if x.correct is not none else '') }}">{{ x.title }}</h3><pre>{{ x.text }}</pre>{% endfor %}
</section>
{% endfor %}
</body></html>
"""

_MARKDOWN = """# {{ r.title }}

Run kind `{{ r.kind }}` in `{{ r.run_dir }}`
{% for s in r.sections %}
## {{ s.title }}
{% for p in s.text %}
{{ p }}
{% endfor %}{% for label, href in s.links %}
- [{{ label }}]({{ href }})
{% endfor %}{% for t in s.tables %}
| {{ t.columns | join(' | ') }} |
|{% for c in t.columns %} --- |{% endfor %}
{% for row in t.rows %}| {% for v in row %}{{ cell(v) }} | {% endfor %}
{% endfor %}{% endfor %}{% for f in s.figures %}
*Figure: {{ f.caption }} (in the HTML report)*
{% endfor %}{% for x in s.samples %}
**{{ x.title }}**

```
{{ x.text }}
```
{% endfor %}{% endfor %}
"""


def fmt(value: Any) -> str:
    """One table cell: floats to 4 significant digits, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(autoescape=True, trim_blocks=False)
    env.globals.update(fmt=fmt, cell=lambda v: fmt(v).replace("|", "\\|").replace("\n", " "))
    return env


def to_html(report: Report) -> str:
    return _environment().from_string(_HTML).render(r=report)


def to_markdown(report: Report) -> str:
    env = SandboxedEnvironment(autoescape=False)  # Markdown is text: escaping would show &lt; literally
    env.globals.update(_environment().globals)
    return env.from_string(_MARKDOWN).render(r=report)


def write(report: Report, html_path: Path, markdown_path: Path | None) -> None:
    """Write the HTML page (and the Markdown beside it), each atomically."""
    from llm_teach.data.jsonl import write_text_atomic

    html_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(html_path, to_html(report))
    if markdown_path is not None:
        write_text_atomic(markdown_path, to_markdown(report))
