"""index.html: the page a run writes, showing the input and then each stage with its montage and numbers."""

from __future__ import annotations

from html import escape
from pathlib import Path

from cnnx.draw import pair_text
from cnnx.images import Source
from cnnx.maps import StageFiles
from cnnx.source import StageSource


def _answer_html(answer: list[tuple[str, float]] | None) -> str:
    if not answer:
        return ""
    rows = "".join(
        f'<tr><th>{escape(name)}</th><td><div class="bar" style="width:{p * 300:.0f}px"></div></td>'
        f"<td>{p:.1%}</td></tr>"
        for name, p in answer
    )
    heading = f"<h2>answer: {escape(answer[0][0])}</h2>"
    return f'<div class="arrow">&darr;</div><section class="stage">{heading}<table>{rows}</table></section>'


def gallery(
    image: Source,
    source: StageSource,
    stages: list[StageFiles],
    root: Path,
    answer: list[tuple[str, float]] | None = None,
) -> str:
    """index.html: the input, then each stage in order with its montage and numbers; no script, no network."""
    cards = []
    for s in stages:
        r = s.result
        stats = r.stats
        title = "input" if r.index == 0 else f"{r.index}. {r.name}"
        facts = [
            ("shape (C x H x W)", " x ".join(map(str, r.shape))),
            ("min / mean / max", " / ".join(
                "-" if v is None else f"{v:.4g}" for v in (stats.min, stats.mean, stats.max))
            ),
            ("zeros", f"{stats.zeros:.1%}"),
            ("receptive field", f"{pair_text(r.receptive_field)} px (jump {pair_text(r.jump)})"),
        ]
        rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in facts)
        images = "".join(
            f'<img src="{escape(p.relative_to(root).as_posix())}" alt="{escape(title)} montage">' for p in s.montages
        )
        links = " ".join(
            f'<a href="{escape(m.path.relative_to(root).as_posix())}">{escape(m.label)}</a>' for m in s.maps
        )
        spec = "" if r.index == 0 else f'<p class="spec">{escape(r.description)}</p>'
        count = f"{len(s.maps)} map{'' if len(s.maps) == 1 else 's'}"
        cards.append(
            f'<section class="stage"><h2>{escape(title)}</h2>{spec}<table>{rows}</table>{images}'
            f"<details><summary>{count} at full size</summary><p>{links}</p></details></section>"
        )
    flow = '<div class="arrow">&darr;</div>'.join(cards) + _answer_html(answer)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>cnnx: {escape(image.path.name)}</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }}
h1 {{ font-size: 1.4em; }}
.stage {{ border: 1px solid #ccc; border-radius: 6px; padding: 0.6em 1em; }}
.stage h2 {{ font-size: 1.1em; margin: 0.2em 0; }}
.spec {{ font-family: ui-monospace, monospace; color: #555; word-break: break-word; }}
.stage img {{ max-width: 100%; display: block; margin: 0.5em 0; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th {{ text-align: left; padding-right: 1em; color: #555; font-weight: normal; }}
.arrow {{ text-align: center; font-size: 1.6em; color: #888; }}
.bar {{ height: 0.9em; background: #b2182b; }}
</style>
</head>
<body>
<h1>cnnx pipeline on {escape(image.path.name)}</h1>
<p class="spec">{escape(source.title)}</p>
<p>{escape(source.caption.capitalize())}. Each stage's colour bar gives the values its colours
stand for; <a href="manifest.json">manifest.json</a> has every number, and <a href="overview.png">overview.png</a>
shows all stages side by side.</p>
{flow}
</body>
</html>
"""
