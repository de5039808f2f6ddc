"""index.html: the page a run writes: the whole network at a glance, then each stage's maps large, in words and
numbers.

At the top a flow shows the input, every stage's first maps small and the
answer, left to right, so the whole network fits one screen (a long one
scrolls within the flow); each step links to its stage's card below.  The page
works offline from the folder (no script, no network), fits any
window width (the maps flow in a grid), follows the system's light or dark
mode, and is read with the keyboard as well as the mouse: every map is a
link to itself at full size.
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path

from cnnx.explain.fields import stage_story
from cnnx.io.images import LoadedImage
from cnnx.render.draw import pair_text, shape_text
from cnnx.render.maps import StageFiles
from cnnx.sources.source import StageSource

STYLE = """
:root { color-scheme: light dark; --bg: #ffffff; --fg: #1d1d1d; --muted: #5a5a5a; --card: #f5f5f4; --line: #d0d0d0;
        --accent: #b2182b; --focus: #1a5fb4; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #141414; --fg: #ececec; --muted: #a8a8a8; --card: #1f1f1f; --line: #3a3a3a; --accent: #ef8a62;
          --focus: #78aeed; }
}
* { box-sizing: border-box; }
body { font: 16px/1.5 system-ui, sans-serif; margin: 0 auto; max-width: 1800px;
       padding: 1rem clamp(0.75rem, 3vw, 2.5rem); background: var(--bg); color: var(--fg); }
h1 { font-size: 1.5rem; margin: 0.4rem 0; }
h2 { font-size: 1.15rem; margin: 0 0 0.3rem; }
.muted, .spec { color: var(--muted); }
.spec { font-family: ui-monospace, monospace; overflow-wrap: anywhere; }
a { color: var(--focus); }
a:focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; }
.stage { border: 1px solid var(--line); border-radius: 10px; padding: 1rem 1.25rem; margin: 1rem 0;
         background: var(--card); }
.stage:target { outline: 3px solid var(--focus); outline-offset: 2px; }
.stage { scroll-margin-top: 0.6rem; }
.about { display: flex; flex-wrap: wrap; gap: 1rem 1.5rem; align-items: flex-start; }
.story { flex: 1 1 28rem; max-width: 60rem; margin: 0; }
.field { flex: 0 0 auto; width: min(100%, 220px); }
.field svg { width: 100%; height: auto; display: block; border: 1px solid var(--line); background: #fff; }
.field p { font-size: 0.85rem; margin: 0.2rem 0 0; color: var(--muted); }
table.facts { border-collapse: collapse; font-size: 0.9rem; }
table.facts th { text-align: left; padding-right: 1rem; color: var(--muted); font-weight: normal; }
.bar { max-width: 100%; height: auto; display: block; margin: 0.6rem 0; background: #fff; border-radius: 4px; }
.maps { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 15rem), 1fr)); gap: 0.9rem;
        margin-top: 0.6rem; }
figure { margin: 0; min-width: 0; }
figure img { width: 100%; height: auto; display: block; image-rendering: pixelated; background: #fff;
             border: 1px solid var(--line); }
figcaption { font-size: 0.85rem; overflow-wrap: anywhere; margin-top: 0.2rem; }
.answer td { padding: 0.1rem 0.6rem 0.1rem 0; }
.answer .p { height: 0.9em; background: var(--accent); }
.arrow { text-align: center; font-size: 1.4rem; color: var(--muted); }
.flow ol { display: flex; flex-wrap: wrap; gap: 0.5rem 0; margin: 0.6rem 0; padding: 0; list-style: none;
           max-height: 24rem; overflow-y: auto; }
.flow li { display: flex; align-items: center; flex: 1 1 5.5rem; max-width: 12rem; }
.flow li + li::before { content: "→"; color: var(--muted); font-size: 1.2rem; padding: 0 0.25rem; }
.flow a { flex: 1; display: flex; flex-direction: column; gap: 0.25rem; min-width: 0; height: 100%; padding: 0.4rem;
          border: 1px solid var(--line); border-radius: 8px; background: var(--card); color: inherit;
          text-decoration: none; font-size: 0.8rem; }
.flow a:hover { border-color: var(--focus); }
.flow a[aria-current] { border: 2px solid var(--accent); }
.flow b { font-size: 0.85rem; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.thumbs { display: grid; grid-template-columns: repeat(var(--columns), 1fr); gap: 2px; }
.thumbs img { width: 100%; height: auto; display: block; image-rendering: pixelated; background: #fff; }
.flow .p { height: 0.5em; background: var(--accent); }
.flow li.block { flex: 0 1 auto; max-width: 100%; display: block; padding: 0 0.4rem;
                 border-left: 3px solid var(--line); }
.flow li.block::before { content: none; }
.flow li.block > ol { margin: 0.1rem 0 0.3rem; max-height: none; overflow: visible; }
.flow li.block li { flex: 0 0 6.5rem; }
"""

FLOW_MAPS = 16  # a stage's maps drawn small in the flow; its card has every one
FLOW_UNGROUPED = 12  # steps a flow shows in one row; a longer one is shown in blocks


def _field(result, input_tile: str, shape) -> str:
    """The input picture with the square one value of this stage sees, centred."""
    rf = result.receptive_field or (shape[1], shape[2])
    H, W = shape[1], shape[2]
    h, w = min(rf[0], H), min(rf[1], W)
    x, y = (W - w) / 2, (H - h) / 2
    stroke = max(H, W) / 110
    return (
        f'<div class="field"><svg viewBox="0 0 {W} {H}" role="img" aria-label="the input with a {pair_text(rf)} '
        f'pixel square: what one value of this stage sees"><image href="{escape(input_tile)}" width="{W}" '
        f'height="{H}" preserveAspectRatio="none" style="image-rendering: pixelated"/><rect x="{x:.1f}" y="{y:.1f}" '
        f'width="{w}" height="{h}" fill="rgba(255,210,0,0.25)" stroke="#d40000" stroke-width="{stroke:.2f}"/>'
        f"</svg><p>one value sees {rf[0]}x{rf[1]} input pixels</p></div>"
    )


def _facts(r) -> str:
    stats = r.stats
    numbers = " / ".join("-" if v is None else f"{v:.4g}" for v in (stats.min, stats.mean, stats.max))
    facts = [
        ("shape (C x H x W)", " x ".join(map(str, r.shape))),
        ("min / mean / max", numbers),
        ("zeros", f"{stats.zeros:.1%}"),
    ]
    if stats.nonfinite:
        facts.append(("NaN or infinite", f"{stats.nonfinite:.2%}"))
    if r.receptive_field:
        facts.append(
            ("receptive field", f"{shape_text(r.receptive_field)} px (neighbours {pair_text(r.jump)} px apart)")
        )
    return (
        '<table class="facts">'
        + "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in facts)
        + "</table>"
    )


def _clipped(files: StageFiles) -> str:
    below = sum(m.clipped[0] for m in files.maps) / max(len(files.maps), 1)
    above = sum(m.clipped[1] for m in files.maps) / max(len(files.maps), 1)
    if not below + above:
        return ""
    return (
        f'<p class="muted">{below + above:.2%} of the values lie beyond the colour bar\'s ends and are drawn in '
        "its end colours (the arrows); <code>--normalize symmetric</code> draws every value inside.</p>"
    )


def _scale_words(stages: list[StageFiles]) -> str:
    """Says so when feature maps are drawn on the square-root scale."""
    if not any(s.stretch == "sqrt" for s in stages):
        return ""
    return (", on a square-root scale (a value a quarter of an end's is drawn half way to it, so faint structure "
            "shows beside strong edges)")


def _maps(files: StageFiles, root: Path) -> str:
    figures = []
    for m in files.maps:
        full, tile = m.path.relative_to(root).as_posix(), (m.tile or m.path).relative_to(root).as_posix()
        label = f"ch{m.channel:02d} {m.label}"
        figures.append(
            f'<figure><a href="{escape(full)}"><img src="{escape(tile)}" alt="{escape(label)}" loading="lazy"></a>'
            f"<figcaption>{escape(label)}</figcaption></figure>"
        )
    return f'<div class="maps">{"".join(figures)}</div>'


def _answer(answer: list[tuple[str, float]] | None) -> str:
    if not answer:
        return ""
    rows = "".join(
        f'<tr><th>{escape(name)}</th><td style="width:12rem"><div class="p" style="width:{p * 100:.1f}%"></div></td>'
        f"<td>{p:.1%}</td></tr>"
        for name, p in answer
    )
    return (
        f'<div class="arrow" aria-hidden="true">&darr;</div><section class="stage answer" id="answer">'
        f"<h2>The answer: {escape(answer[0][0])}</h2><table>{rows}</table></section>"
    )


def _step(s: StageFiles, root: Path) -> str:
    """One step of the flow: the stage's name, its first maps small and its shape, a link to its card."""
    r = s.result
    shown = s.maps[:FLOW_MAPS]
    thumbs = "".join(
        f'<img src="{escape((m.tile or m.path).relative_to(root).as_posix())}" alt="" width="{r.shape[2]}" '
        f'height="{r.shape[1]}">'
        for m in shown
    )
    title = "input" if r.index == 0 else f"{r.index}. {r.name}"
    return (
        f'<li><a href="#stage-{r.index}"><b>{escape(title)}</b><span class="thumbs" style="--columns:'
        f'{math.ceil(math.sqrt(len(shown)))}">{thumbs}</span><span class="muted">{escape(shape_text(r.shape))}'
        "</span></a></li>"
    )


def _blocks(stages: list[StageFiles]) -> list[list[StageFiles]]:
    """A deep network's stages in blocks: each run of stages whose maps have one size (a ResNet's layer1 to layer4,
    a chain between its pools); a short network is one block."""
    if len(stages) <= FLOW_UNGROUPED:
        return [stages]
    blocks: list[list[StageFiles]] = []
    for s in stages:
        if blocks and blocks[-1][-1].result.shape[1:] == s.result.shape[1:]:
            blocks[-1].append(s)
        else:
            blocks.append([s])
    return blocks


def _flow(stages: list[StageFiles], root: Path, answer: list[tuple[str, float]] | None) -> str:
    """The network at a glance: the input and each stage's first maps small, left to right (a deep network's in
    blocks of one map size, scrolling within the flow), then the answer; each step a link to its card."""
    blocks = _blocks(stages)
    if len(blocks) == 1:
        steps = [_step(s, root) for s in stages]
    else:
        steps = [
            f'<li class="block"><span class="muted">{escape(shape_text(block[0].result.shape[1:]))} maps, '
            f'{len(block)} stage{"s" if len(block) > 1 else ""}</span><ol>{"".join(_step(s, root) for s in block)}'
            "</ol></li>"
            for block in blocks
        ]
    if answer:
        name, p = answer[0]
        steps.append(
            f'<li><a href="#answer"><b>answer</b><span>{escape(name)}</span><span class="muted">{p:.1%}</span>'
            f'<div class="p" style="width:{p * 100:.1f}%"></div></a></li>'
        )
    return f'<nav class="flow" aria-label="the network at a glance"><ol>{"".join(steps)}</ol></nav>'


def gallery(
    image: LoadedImage,
    source: StageSource,
    stages: list[StageFiles],
    root: Path,
    answer: list[tuple[str, float]] | None = None,
) -> str:
    """index.html of a run: every stage with its maps, its numbers, what it did in words, and what a value sees."""
    shape = stages[0].result.shape
    input_tile = (stages[0].maps[0].tile or stages[0].maps[0].path).relative_to(root).as_posix()
    cards, before = [], None
    for s in stages:
        r = s.result
        title = "input" if r.index == 0 else f"{r.index}. {r.name}"
        anchor = f"stage-{r.index}"
        spec = "" if r.index == 0 else f'<p class="spec">{escape(r.description)}</p>'
        bar = (
            ""
            if s.colorbar is None
            else (
                f'<img class="bar" src="{escape(s.colorbar.relative_to(root).as_posix())}" '
                'alt="colour bar of this stage">'
            )
        )
        montage = " ".join(
            f'<a href="{escape(p.relative_to(root).as_posix())}">montage{"" if len(s.montages) == 1 else f" {k}"}</a>'
            for k, p in enumerate(s.montages, 1)
        )
        cards.append(
            f'<section class="stage" id="{anchor}"><h2>{escape(title)} <span class="muted">'
            f"{escape(shape_text(r.shape))}</span></h2>{spec}"
            f'<div class="about"><p class="story">{escape(stage_story(r, before))}</p>'
            f"{_field(r, input_tile, shape) if r.index else ''}{_facts(r)}</div>"
            f'{bar}{_clipped(s)}{_maps(s, root)}<p class="muted">{montage}</p></section>'
        )
        before = r
    flow = '<div class="arrow" aria-hidden="true">&darr;</div>'.join(cards) + _answer(answer)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cnnx: {escape(image.path.name)}</title>
<style>{STYLE}</style>
</head>
<body>
<header>
<h1>What each stage does to {escape(image.path.name)}</h1>
<p class="spec">{escape(source.title)}</p>
{_flow(stages, root, answer)}
<p>{escape(source.caption.capitalize())}. Colours: blue below zero, white at zero, red above (values never
below zero go from white to red); each stage's colour bar gives the numbers{_scale_words(stages)}.
<span id="flow-hint">Click a step above to go to its stage;</span>
<span id="click-hint">click a map to see it at full size;</span>
<a href="manifest.json">manifest.json</a> has every number, and <a href="overview.png">overview.png</a> shows all
stages side by side.</p>
</header>
<main>
{flow}
</main>
</body>
</html>
"""
