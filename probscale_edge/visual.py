"""The report a person looks at: ``report.html`` (self-contained) and ``pareto.png``, written into a bundle.

Reads only the manifest, and every field is optional: a single-budget manifest (no ``"ladder"``) is drawn as one
point. matplotlib (Agg, through ``matplotlib.figure.Figure``: no pyplot state) is imported inside the functions
that draw, so importing this module stays cheap. ``plain_log_axis`` and ``place_labels`` are shared with the
benchmark plots (benchmarks/headline, benchmarks/compression)."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

DASH = "–"
BLUE, ORANGE, RED = "tab:blue", "tab:orange", "tab:red"


# --------------------------------------------------------------------------- reading the manifest
def _get(d, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or d.get(k) is None:
            return default
        d = d[k]
    return d


def _num(x):
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def _pct(x, digits=1):
    x = _num(x)
    return DASH if x is None else f"{100 * x:.{digits}f}%"


def _mb(b):
    b = _num(b)
    return DASH if b is None else f"{b / 1e6:.2f} MB"


def _ms(x):
    x = _num(x)
    return DASH if x is None else f"{x:.2f} ms"


def _millions(x):
    x = _num(x)
    return DASH if x is None else f"{x / 1e6:.2f}M"


def _ratio(x):
    x = _num(x)
    return DASH if x is None else f"{x:.2f}x"


def _rung_label(r: dict) -> str:
    """'5x' from the target ratio (what the ladder aimed at), else the measured ratio."""
    t, m = _num(r.get("target_ratio")), _num(r.get("ratio_total"))
    if t is not None:
        return f"{t:g}x"
    return f"{m:.1f}x" if m is not None else f"rung {r.get('rung', '?')}"


def _meets_all(r: dict):
    """True / False over the constraints that apply (None = not applicable); None when nothing is recorded."""
    vals = [v for v in (r.get("meets") or {}).values() if v is not None] if isinstance(r.get("meets"), dict) else []
    return all(bool(v) for v in vals) if vals else None


def _top_full(m: dict) -> dict:
    return {"eval_accuracy": _get(m, "validation", "accuracy", "full_finetuned_torch_fp32"),
            "bytes": _get(m, "sizes", "full_fp32_weights_bytes"), "p50_ms": _get(m, "latency", "full_torch_fp32_p50_ms"),
            "total_params": _get(m, "parameters", "original", "total"),
            "non_embedding_params": _get(m, "parameters", "original", "non_embedding")}


def _shipped(m: dict) -> dict:
    """The bundle in the folder, from the manifest's top-level fields."""
    return {"rung": None, "bytes": _get(m, "sizes", "bundle_model_bytes"), "p50_ms": _get(m, "latency", "bundle_p50_ms"),
            "eval_accuracy": _get(m, "validation", "accuracy", "bundle"), "ratio_total": _get(m, "parameters", "ratio_total"),
            "eval_retention": _get(m, "validation", "retention"), "total_params": _get(m, "parameters", "pruned", "total"),
            "non_embedding_params": _get(m, "parameters", "pruned", "non_embedding")}


def ladder_view(m: dict) -> dict:
    """What the plots and tables draw, one shape with or without a ladder."""
    m = m if isinstance(m, dict) else {}
    lad = m.get("ladder") if isinstance(m.get("ladder"), dict) else None
    full, shipped = _top_full(m), _shipped(m)
    if lad is None:
        one = dict(shipped, rung=1, label=_ratio(shipped["ratio_total"]) if _num(shipped["ratio_total"]) else "bundle")
        return {"single": True, "rungs": [one], "chosen": 0, "full": full, "uncut": None, "constraints": {},
                "best_effort": False, "stopped": None, "shipped": shipped}
    rungs = [dict(r, label=_rung_label(r)) for r in lad.get("rungs") or [] if isinstance(r, dict)]
    chosen = lad.get("chosen")
    chosen = chosen if isinstance(chosen, int) and not isinstance(chosen, bool) and 0 <= chosen < len(rungs) else None
    lf = lad.get("full") if isinstance(lad.get("full"), dict) else {}
    full.update({k: v for k, v in lf.items() if v is not None})
    return {"single": False, "rungs": rungs, "chosen": chosen, "full": full,
            "uncut": lad.get("uncut_int8") if isinstance(lad.get("uncut_int8"), dict) else None,
            "constraints": lad.get("constraints") if isinstance(lad.get("constraints"), dict) else {},
            "best_effort": bool(lad.get("best_effort")), "stopped": lad.get("stopped"), "shipped": shipped,
            "start": lad.get("start") if isinstance(lad.get("start"), dict) else {}}


# --------------------------------------------------------------------------- plot helpers (shared)
def _plain(v, _pos=None) -> str:
    if v >= 1 and abs(v - round(v)) < 1e-9:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _nice_ticks(lo: float, hi: float) -> list[float]:
    """Round ticks inside [lo, hi] on a log axis: the coarsest 1-2-5-like set that gives at least four."""
    ticks = []
    for mant in ((1,), (1, 3), (1, 2, 5), (1, 2, 3, 5, 7), (1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [mm * 10.0 ** e for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
                 for mm in mant if lo <= mm * 10.0 ** e <= hi]
        if len(ticks) >= 4:
            break
    return ticks


def plain_log_axis(ax, values, axis="x", pad=1.25, log_above=2.5):
    """Limits and plain tick labels ('2', '5', '10', '20') for the positive ``values`` on ``axis``: a log axis
    when they span more than ``log_above``x, else linear; minor tick labels off, never '2x10^1' mathtext."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    vals = [v for v in (_num(x) for x in values) if v is not None and v > 0]
    a = ax.xaxis if axis == "x" else ax.yaxis
    setlim, setscale = (ax.set_xlim, ax.set_xscale) if axis == "x" else (ax.set_ylim, ax.set_yscale)
    if not vals:
        return
    lo, hi = min(vals), max(vals)
    if hi / lo > log_above:
        setscale("log")
        f = pad * (hi / lo) ** 0.04
        setlim(lo / f, hi * f)
        a.set_major_locator(FixedLocator(_nice_ticks(lo / f, hi * f)))
        a.set_major_formatter(FuncFormatter(_plain))
    else:
        span = (hi - lo) or max(hi * 0.2, 1e-9)
        setlim(max(lo - 0.2 * span, 0.0) if lo - 0.2 * span < 0 <= lo else lo - 0.2 * span, hi + 0.2 * span)
        plain_linear_axis(a)
    a.set_minor_formatter(NullFormatter())


def plain_linear_axis(a):
    """Plain numbers on a linear axis (``ax.xaxis`` / ``ax.yaxis``): no offset, no scientific notation."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fmt = ScalarFormatter(useOffset=False, useMathText=False)
    fmt.set_scientific(False)
    a.set_major_formatter(fmt)
    a.set_minor_formatter(NullFormatter())


_DIRS = ((1, 1), (1, -1), (-1, 1), (-1, -1), (0, 1), (0, -1), (1, 0), (-1, 0))


def _obstacles(ax, points, lines, marker_px):
    to_px = ax.transData.transform
    obs = [(*to_px(p[:2]), p[2] if len(p) > 2 else marker_px) for p in points]
    for line in lines:
        px = [to_px(p) for p in line]
        for (x0, y0), (x1, y1) in zip(px, px[1:]):
            n = max(2, int(math.hypot(x1 - x0, y1 - y0) / 4))  # a sample every ~4 px
            obs += [(x0 + (x1 - x0) * t / n, y0 + (y1 - y0) * t / n, 2.0) for t in range(1, n)]
    return obs


def _cost(box, frame, placed, obs) -> float:
    c = 100.0 * (box.x0 < frame.x0 or box.x1 > frame.x1 or box.y0 < frame.y0 or box.y1 > frame.y1)
    c += 10.0 * sum(box.overlaps(b) for b in placed)
    return c + sum((5.0 if r > 2 else 1.0) for x, y, r in obs if box.padded(r).contains(x, y))


def place_labels(ax, items, points=(), lines=(), fontsize=8, marker_px=6.0):
    """Label points without overlaps, greedily: for each ``(x, y, text)`` try offsets around the point, nearest
    first, and keep the first whose box hits no label placed before, no point of ``points`` (data coordinates,
    optionally ``(x, y, radius_px)``), no segment of ``lines`` (polylines) and stays inside the axes; a label
    placed far from its point, or the least bad one when none fits, gets a leader line. An item may carry its
    marker's radius in pixels as a fourth element. Call it once limits and layout are final. Returns the
    annotations."""
    ax.get_xlim(), ax.get_ylim()  # settle any pending autoscale before reading positions
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    obs = _obstacles(ax, list(points) + [(it[0], it[1], *it[3:4]) for it in items], lines, marker_px)
    placed, out = [], []
    for x, y, text, *_ in items:
        best = None
        for radius in (7, 12, 18, 27, 38):  # points; the first ring just clears a default marker
            for dx, dy in _DIRS:
                kw = dict(xytext=(dx * radius, dy * radius), textcoords="offset points", fontsize=fontsize, zorder=6,
                          ha={1: "left", -1: "right", 0: "center"}[dx], va={1: "bottom", -1: "top", 0: "center"}[dy])
                ann = ax.annotate(text, (x, y), **kw)
                box = ann.get_window_extent(renderer).padded(1.5)
                cost = _cost(box, frame, placed, obs)
                ann.remove()
                if best is None or cost < best[0]:
                    best = (cost, kw, box)
                if cost == 0:
                    break
            if best[0] == 0:
                break
        cost, kw, box = best
        if cost > 0 or max(map(abs, kw["xytext"])) >= 12:
            kw["arrowprops"] = dict(arrowstyle="-", lw=0.6, color="0.45", shrinkA=0, shrinkB=3)
        out.append(ax.annotate(text, (x, y), **kw))
        placed.append(box)
    return out


def _mpl_text(s) -> str:
    """A manifest string made safe for matplotlib text ('$' would start mathtext)."""
    return str(s).replace("$", r"\$")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _new_figure(w, h, dpi=110):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


# --------------------------------------------------------------------------- the pareto figure
def _xy(p, key):
    if not isinstance(p, dict):
        return None
    x, y = _num(p.get(key)), _num(p.get("eval_accuracy"))
    if x is None or y is None or x <= 0:
        return None
    return (x / 1e6 if key == "bytes" else x), 100 * y


def _floor(v):
    r, full = _num(v["constraints"].get("min_retention")), _num(v["full"].get("eval_accuracy"))
    return (100 * r * full, r) if r is not None and full is not None else (None, r)


def _draw_points(ax, v, key):
    """Scatter the rungs, the chosen one, the full and uncut-int8 models; returns (labels, all points, line)."""
    pts = [(_xy(r, key), r) for r in v["rungs"]]
    pts = [(p, r) for p, r in pts if p]
    line = [p for p, _ in pts]
    if len(line) > 1:
        ax.plot(*zip(*line), "-", color=BLUE, lw=1.2, alpha=0.7, zorder=2)
    ok = [p for p, r in pts if _meets_all(r) is not False]
    bad = [p for p, r in pts if _meets_all(r) is False]
    if ok:
        ax.scatter(*zip(*ok), s=42, color=BLUE, zorder=3, label="shipped bundle" if v["single"] else "rung, meets the constraints")
    if bad:
        ax.scatter(*zip(*bad), s=42, facecolors="white", edgecolors=BLUE, linewidths=1.4, zorder=3,
                   label="rung, misses a constraint")
    chosen = v["rungs"][v["chosen"]] if v["chosen"] is not None else None
    labels = [(*p, r["label"], 13.0 if r is chosen else 6.0) for p, r in pts]
    hi = _xy(chosen, key)
    if hi:
        ax.scatter(*hi, s=260, facecolors="none", edgecolors=ORANGE, linewidths=2.4, zorder=4,
                   label=None if v["single"] else "chosen rung")
    elif v["best_effort"] and _xy(v["shipped"], key):
        p = _xy(v["shipped"], key)
        ax.scatter(*p, s=120, marker="X", color=ORANGE, zorder=4, label="shipped bundle (best effort)")
        labels.append((*p, "shipped"))
    for p, name, kw in ((_xy(v["full"], key), "full fp32", dict(marker="*", s=170, color="black",
                                                                  label="full fine-tuned model (fp32)")),
                        (_xy(v["uncut"], key), "uncut int8", dict(marker="D", s=55, color="tab:purple",
                                                                    label="uncut model, int8"))):
        if p:
            ax.scatter(*p, zorder=3, **kw)
            labels.append((*p, name, 9.0))
    return labels, line


def _pareto_panel(ax, v, key, xlabel, limit):
    labels, line = _draw_points(ax, v, key)
    floor, r = _floor(v)
    if floor is not None:
        ax.axhline(floor, ls="--", color=RED, lw=1.1, zorder=1,
                   label=f"floor: {100 * r:g}% of the full model's accuracy")
    limit = _num(limit)
    if limit is not None and limit > 0:
        ax.axvline(limit, ls=":", color="0.35", lw=1.3, zorder=1, label=f"{xlabel.split(' (')[0]} limit")
    xs = [p[0] for p in labels] + ([limit] if limit else [])
    ys = [p[1] for p in labels] + ([floor] if floor is not None else [])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("eval accuracy (%)")
    ax.grid(alpha=0.3, which="major")
    if not labels:
        ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center", va="center", color="0.4")
        ax.set_xticks([])
        return []
    plain_log_axis(ax, xs, "x")
    lo, hi = min(ys), max(ys)
    span = max(hi - lo, 1.0)
    ax.set_ylim(lo - 0.18 * span, hi + 0.18 * span)
    plain_linear_axis(ax.yaxis)
    return labels, line


def _label_panel(ax, items, n_rungs, lines, min_px=20.0):
    """Place the labels; where rung points crowd (closer than ``min_px`` pixels), label only some of them (the
    chosen one, the first and the last first, then in ladder order) and say so: the ladder table lists them all."""
    to_px = ax.transData.transform
    order = [i for i in range(n_rungs) if len(items[i]) > 3 and items[i][3] > 10] + [0, n_rungs - 1]
    order += list(range(n_rungs))
    kept, seen = [], set()
    for i in order:
        if 0 <= i < n_rungs and i not in seen:
            seen.add(i)
            px = to_px(items[i][:2])
            if all(math.dist(px, to_px(items[j][:2])) >= min_px for j in kept):
                kept.append(i)
    keep = [items[i] for i in sorted(kept)] + list(items[n_rungs:])
    anns = place_labels(ax, keep, points=[(it[0], it[1], *it[3:4]) for it in items], lines=lines)
    for ann, it in zip(anns, keep):
        if len(it) > 3 and it[3] > 10:  # the chosen rung: its label in the colour of its ring
            ann.set_color(ORANGE)
            ann.set_fontweight("bold")
    if len(kept) < n_rungs:
        ax.text(0.99, 0.015, "some rung labels left out (crowded): see the ladder table", transform=ax.transAxes,
                ha="right", va="bottom", fontsize=7, color="0.4")


def _rule_lines(ax, floor, limit):
    """The floor (horizontal) and the limit (vertical) as polylines, for place_labels to keep clear of."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    out = [[(x0, floor), (x1, floor)]] if floor is not None else []
    return out + ([[(limit, y0), (limit, y1)]] if limit is not None and limit > 0 else [])


def pareto_figure(manifest: dict):
    """The two-panel Figure (accuracy against model bytes and against p50 latency), labels placed."""
    v = ladder_view(manifest)
    fig = _new_figure(12, 5.2)
    axes = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.065, right=0.985, top=0.88, bottom=0.24, wspace=0.2)
    c = v["constraints"]
    panels = ((axes[0], "bytes", "model file size (MB)", c.get("max_size_mb")),
              (axes[1], "p50_ms", "p50 latency (ms, batch 1)", c.get("max_latency_ms")))
    drawn = [_pareto_panel(ax, v, key, xl, lim) for ax, key, xl, lim in panels]
    for (ax, _, _, lim), res in zip(panels, drawn):
        if res:  # labels last: limits and layout are final now
            _label_panel(ax, res[0], len(res[1]), [res[1], *_rule_lines(ax, _floor(v)[0], _num(lim))])
    handles, names = [], []
    for ax in axes:
        for h, n in zip(*ax.get_legend_handles_labels()):
            if n not in names:
                handles.append(h)
                names.append(n)
    if handles:
        fig.legend(handles, names, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(names), 4),
                   frameon=False, fontsize=9)
    task, model = _get(manifest, "task", "name", default="?"), _get(manifest, "source_model", "name", default="?")
    kind = "single budget (no ladder)" if v["single"] else f"ladder of {len(v['rungs'])} rungs"
    fig.suptitle(_mpl_text(f"{task} · {model}: eval accuracy against size and latency ({kind})"), fontsize=12)
    return fig


def probe_figure(manifest: dict):
    """Task-weighted probe accuracy per layer (index 0 = embeddings), dropped layers marked; None without probes."""
    w = [_num(x) for x in (_get(manifest, "stages", "probe", "weighted", default=[]) or [])]
    if not w or all(x is None for x in w):
        return None
    fig = _new_figure(6.4, 2.9)
    ax = fig.subplots()
    fig.subplots_adjust(left=0.12, right=0.97, top=0.88, bottom=0.2)
    xs = [i for i, x in enumerate(w) if x is not None]
    ax.plot(xs, [100 * w[i] for i in xs], "-o", color=BLUE, ms=4, label="probe accuracy")
    keep = _get(manifest, "subnetwork", "spec", "keep_layers")
    if isinstance(keep, list):
        drop = [i for i in xs if i > 0 and (i - 1) not in keep]
        if drop:
            ax.scatter(drop, [100 * w[i] for i in drop], marker="x", s=60, color=RED, zorder=3, label="layer dropped")
            ax.legend(fontsize=8, loc="lower right")
    ax.set_xticks(xs)
    ax.set_xticklabels(["emb" if i == 0 else str(i - 1) for i in xs])  # layer ids as in the spec (from 0)
    ax.set_xlabel("output of layer (numbered as in the layer map; emb = embeddings)")
    ax.set_ylabel("probe accuracy (%)")
    ax.set_title("task-weighted linear-probe accuracy per layer", fontsize=10)
    ax.grid(alpha=0.3)
    return fig


# --------------------------------------------------------------------------- the HTML
CSS = """body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;
color:#1d2330;padding:0 16px}h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;
border-bottom:1px solid #dde1e8;padding-bottom:4px}table{border-collapse:collapse;margin:6px 0;font-size:13px}
th,td{border:1px solid #dde1e8;padding:4px 8px;text-align:right;vertical-align:top}th{background:#f3f5f8}
td.l,th.l{text-align:left}tr.chosen td{background:#fff3dc;font-weight:600}tr.ref td{color:#5a6270;
font-style:italic}.banner{background:#fff4d6;border:1px solid #e0b24a;padding:10px 14px;border-radius:6px;
margin:12px 0}.ok{color:#1b7a33;font-weight:600}.bad{color:#b3261e;font-weight:600}.muted{color:#6b7280}
.bar{display:inline-block;width:90px;height:9px;background:#e6e9ef;border-radius:3px;margin-left:6px}
.bar span{display:block;height:9px;background:#3b78c2;border-radius:3px}img{max-width:100%}
.kv td:first-child{text-align:left;color:#5a6270}"""


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _table(headers, rows, row_classes=None) -> str:
    """``rows`` hold already-escaped HTML cells; a header starting with '<' is left-aligned ('<name')."""
    th = "".join(f'<th class="l">{_esc(h[1:])}</th>' if h.startswith("<") else f"<th>{_esc(h)}</th>" for h in headers)
    left = [h.startswith("<") for h in headers]
    body = []
    for i, r in enumerate(rows):
        cls = (row_classes or [None] * len(rows))[i]
        tds = "".join(f'<td class="l">{c}</td>' if left[j] else f"<td>{c}</td>" for j, c in enumerate(r))
        body.append(f'<tr class="{cls}">{tds}</tr>' if cls else f"<tr>{tds}</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _met(flag, limited=True) -> str:
    if not limited:
        return '<span class="muted">no limit</span>'
    return '<span class="muted">not measured</span>' if flag is None else (
        '<span class="ok">met</span>' if flag else '<span class="bad">not met</span>')


def _shipped_rung(v):
    """Index of the rung in the bundle: the chosen one, else (best effort) the rung with the shipped bytes."""
    if v["chosen"] is not None or v["single"]:
        return v["chosen"]
    b = _num(v["shipped"].get("bytes"))
    hits = [i for i, r in enumerate(v["rungs"]) if b is not None and _num(r.get("bytes")) == b]
    return hits[-1] if hits else None


def _constraint_rows(v) -> list[list[str]]:
    c, i = v["constraints"], _shipped_rung(v)
    rung = v["rungs"][i] if i is not None else None
    ref = rung or v["shipped"]
    meets = (rung or {}).get("meets") if isinstance((rung or {}).get("meets"), dict) else {}
    specs = (("minimum retention (dev)", "retention", c.get("min_retention"), ref.get("retention"), _pct, 1),
             ("maximum model size", "size", c.get("max_size_mb"), ref.get("bytes"), _mb, 1e6),
             ("maximum p50 latency", "latency", c.get("max_latency_ms"), ref.get("p50_ms"), _ms, 1))
    rows = []
    for name, key, limit, value, fmt, unit in specs:
        lim, val = _num(limit), _num(value)
        flag = meets.get(key)
        if flag is None and lim is not None and val is not None:
            flag = val >= lim if key == "retention" else val / unit <= lim
        shown = DASH if lim is None else (fmt(lim * unit) if key != "retention" else _pct(lim))
        rows.append([_esc(name), _esc(shown), _esc(fmt(val)), _met(flag, lim is not None)])
    return rows


def _probe_gain(rung: dict) -> str:
    action, dev, wo = str(rung.get("action") or ""), _num(rung.get("dev_accuracy")), _num(rung.get("width_only_dev_accuracy"))
    cands = rung.get("candidates") if isinstance(rung.get("candidates"), dict) else {}
    if _num(cands.get(action)) is not None:  # both candidates after the same short distillation: like for like
        dev = _num(cands.get(action))
    if not action:
        return ""
    if action == "width":
        return "The probes chose to cut width at this rung (no layer dropped)."
    if dev is None or wo is None:
        return f"The probes chose to {_esc(action)}; width-only at the same size was not measured."
    return (f"The probes chose to {_esc(action)}: dev accuracy {_pct(dev, 2)} against {_pct(wo, 2)} for width-only "
            f"at the same size ({100 * (dev - wo):+.2f} points"
            + (", both after the same short distillation)." if cands else ")."))


def _headline_html(m, v) -> str:
    task, model = _get(m, "task", "name", default="?"), _get(m, "source_model", "name", default="?")
    s, out = v["shipped"], []
    kind = "single budget (no ladder)" if v["single"] else f"ladder of {len(v['rungs'])} rungs"
    out.append(f"<h1>{_esc(task)} · {_esc(model)}</h1><p class='muted'>target {_esc(m.get('target', '?'))} · {kind}</p>")
    if v["best_effort"]:
        out.append("<div class='banner'><b>Best effort.</b> No rung met every constraint; this bundle is the closest "
                   "rung reached, shipped because <code>--best-effort</code> asked for it.</div>")
    rung = v["rungs"][v["chosen"]] if v["chosen"] is not None and not v["single"] else None
    kv = [("shipped bundle", f"{_esc(_ratio(s['ratio_total']))} fewer total parameters, {_esc(_mb(s['bytes']))}, "
                             f"p50 {_esc(_ms(s['p50_ms']))}"),
          ("eval accuracy", f"{_esc(_pct(s['eval_accuracy'], 2))} (full model {_esc(_pct(v['full'].get('eval_accuracy'), 2))}"
                            f", retention {_esc(_pct(s['eval_retention'], 2))})")]
    if rung:
        kv.insert(0, ("chosen rung", f"rung {_esc(rung.get('rung', v['chosen'] + 1))}: {_esc(rung['label'])} target, "
                                     f"{_esc(_ratio(rung.get('ratio_total')))} measured, dev retention "
                                     f"{_esc(_pct(rung.get('retention'), 2))}, {_esc(_mb(rung.get('bytes')))}, "
                                     f"p50 {_esc(_ms(rung.get('p50_ms')))}"))
        if _probe_gain(rung):
            kv.append(("probes vs width-only", _probe_gain(rung)))
    elif not v["single"]:
        kv.insert(0, ("chosen rung", "<span class='bad'>none: no rung met every constraint</span>"))
    start = v.get("start") or {}
    if start.get("why"):
        kv.append(("where the walk started", _esc(str(start["why"])) + (
            "; that rung missed the floor, so the walk started again from the top" if start.get("restarted") else "")))
    if v["stopped"]:
        kv.append(("why the walk stopped", _esc(v["stopped"])))
    out.append("<table class='kv'>" + "".join(f"<tr><td>{k}</td><td class='l'>{x}</td></tr>" for k, x in kv) + "</table>")
    if not v["single"]:
        out.append("<h2>Constraints</h2>" + _table(["<constraint", "limit", "chosen" if rung else "shipped", "<status"],
                                                  _constraint_rows(v)))
    return "\n".join(out)


def _ladder_html(v) -> str:
    heads = ["rung", "target ratio", "measured ratio", "total params", "non-emb. params", "bytes", "p50", "dev acc.",
             "eval acc.", "retention (dev)", "<action", "width-only dev acc.", "<meets constraints", "chosen"]
    rows, classes = [], []
    for ref, name in ((v["full"], "full fine-tuned (fp32)"), (v["uncut"], "uncut int8")):
        if isinstance(ref, dict):
            rows.append([_esc(name), DASH, DASH, _esc(_millions(ref.get("total_params"))),
                         _esc(_millions(ref.get("non_embedding_params"))), _esc(_mb(ref.get("bytes"))),
                         _esc(_ms(ref.get("p50_ms"))), _esc(_pct(ref.get("dev_accuracy"), 2)),
                         _esc(_pct(ref.get("eval_accuracy"), 2)), DASH, DASH, DASH, DASH, DASH])
            classes.append("ref")
    shipped = _shipped_rung(v)
    for i, r in enumerate(v["rungs"]):
        meets = r.get("meets") if isinstance(r.get("meets"), dict) else {}
        detail = ", ".join(f"{_esc(k)} {'yes' if x else 'no'}" for k, x in meets.items() if x is not None)
        allm = _meets_all(r)
        verdict = DASH if allm is None else ("<span class='ok'>yes</span>" if allm else "<span class='bad'>no</span>")
        rows.append([_esc(r.get("rung", i + 1)), _esc(_rung_label({"target_ratio": r.get("target_ratio")})
                                                      if _num(r.get("target_ratio")) else DASH),
                     _esc(_ratio(r.get("ratio_total"))), _esc(_millions(r.get("total_params"))),
                     _esc(_millions(r.get("non_embedding_params"))), _esc(_mb(r.get("bytes"))), _esc(_ms(r.get("p50_ms"))),
                     _esc(_pct(r.get("dev_accuracy"), 2)), _esc(_pct(r.get("eval_accuracy"), 2)),
                     _esc(_pct(r.get("retention"), 2)), _esc(r.get("action") or DASH),
                     _esc(_pct(r.get("width_only_dev_accuracy"), 2)),
                     f"{verdict} <span class='muted'>{detail}</span>" if detail else verdict,
                     "&#9733; chosen" if i == v["chosen"] else ("shipped (best effort)" if i == shipped else "")])
        classes.append("rung chosen" if i == v["chosen"] else "rung")
    note = ("<p class='muted'>Retention is a rung's dev accuracy over the full model's dev accuracy (the split held "
            "out of the training data); eval accuracy is the reported split. MB = 1,000,000 bytes.</p>")
    return _table(heads, rows, classes) + note


def _int_keys(d) -> dict:
    out = {}
    for k, x in (d or {}).items() if isinstance(d, dict) else ():
        try:
            out[int(k)] = x
        except (TypeError, ValueError):
            continue
    return out


def _kept_cell(ids, total) -> str:
    if not isinstance(ids, list):
        return "<span class='muted'>not listed</span>"
    t = _num(total)
    if not t:
        return _esc(len(ids))
    w = max(0.0, min(100.0, 100 * len(ids) / t))
    return f"{len(ids)} / {int(t)}<span class='bar'><span style='width:{w:.0f}%'></span></span>"


def _layer_map_html(m) -> str:
    spec, src = _get(m, "subnetwork", "spec", default={}), m.get("source_model") or {}
    if not isinstance(spec, dict) or not spec:
        return "<p class='muted'>No subnetwork recorded in the manifest.</p>"
    keep = spec.get("keep_layers") if isinstance(spec.get("keep_layers"), list) else None
    heads, ffn = _int_keys(spec.get("heads")), _int_keys(spec.get("ffn"))
    n = _num(src.get("num_layers")) if isinstance(src, dict) else None
    probe = _get(m, "stages", "probe", "weighted", default=None)
    if n is None and isinstance(probe, list) and len(probe) > 1:
        n = len(probe) - 1  # one probe per layer output plus the embeddings
    layers = range(int(n)) if n else sorted(set(keep or []) | set(heads) | set(ffn))
    nh = src.get("num_heads") if isinstance(src, dict) else None
    nf = src.get("ffn_size") if isinstance(src, dict) else None
    rows, classes = [], []
    for i in layers:
        dropped = keep is not None and i not in keep
        rows.append([_esc(i), "<span class='bad'>dropped</span>" if dropped else "kept",
                     DASH if dropped else _kept_cell(heads.get(i), nh), DASH if dropped else _kept_cell(ffn.get(i), nf)])
        classes.append("ref" if dropped else None)
    totals = "" if _num(nh) and _num(nf) else "<p class='muted'>Original head / neuron counts not in the manifest: " \
                                               "kept counts only.</p>"
    return _table(["layer", "<status", "<attention heads kept", "<FFN neurons kept"], rows, classes) + totals


def _gate_html(m) -> str:
    q = m.get("quantization") if isinstance(m.get("quantization"), dict) else {}
    attempts = [a for a in q.get("attempts") or [] if isinstance(a, dict)]
    if not attempts:
        return "<p class='muted'>No int8 gate attempts recorded.</p>"
    rows = []
    for a in attempts:
        ex = a.get("excluded_nodes")
        if isinstance(ex, list):
            ex = f"{len(ex)}" + (f" ({', '.join(map(str, ex[:4]))}{', …' if len(ex) > 4 else ''})" if ex else "")
        drop = _num(a.get("drop_points"))
        rows.append([_esc(a.get("setting", DASH)), _esc(DASH if ex is None else ex), _esc(_pct(a.get("accuracy"), 2)),
                     _esc(DASH if drop is None else f"{drop:+.2f}"),
                     DASH if a.get("pass") is None else ("<span class='ok'>pass</span>" if a["pass"]
                                                         else "<span class='bad'>fail</span>"), _esc(_mb(a.get("bytes")))])
    lim = _num(q.get("max_accuracy_drop"))
    note = (f"<p class='muted'>An attempt passes when accuracy drops at most {lim:g} points against fp32"
            f"{'; chosen: ' + _esc(q['chosen']) if q.get('chosen') else ''}.</p>") if lim is not None else ""
    return _table(["<setting", "<excluded nodes", "accuracy", "drop (points)", "<gate", "bytes"], rows) + note


def report_html(manifest: dict, pareto_png: bytes, probe_png: bytes | None = None) -> str:
    m = manifest if isinstance(manifest, dict) else {}
    v = ladder_view(m)
    title = f"probscale-edge report: {_get(m, 'task', 'name', default='?')}"
    parts = [_headline_html(m, v), "<h2>Ladder</h2>" if not v["single"] else "<h2>Bundle (single budget, no ladder)</h2>",
             _ladder_html(v), "<h2>Accuracy against size and latency</h2>", _img(pareto_png, "pareto plot"),
             "<h2>Per-layer probe accuracy</h2>",
             _img(probe_png, "probe curve") if probe_png else "<p class='muted'>No probe scores in the manifest.</p>",
             "<h2>What was kept, layer by layer</h2>", _layer_map_html(m), "<h2>int8 gate</h2>", _gate_html(m)]
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


def write_report(manifest: dict, folder: Path) -> dict:
    """Write ``report.html`` (self-contained) and ``pareto.png`` into ``folder``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pareto = _png(pareto_figure(manifest))
    pf = probe_figure(manifest if isinstance(manifest, dict) else {})
    probe = _png(pf) if pf is not None else None
    paths = {"report.html": folder / "report.html", "pareto.png": folder / "pareto.png"}
    paths["pareto.png"].write_bytes(pareto)
    paths["report.html"].write_text(report_html(manifest, pareto, probe), encoding="utf-8")
    return paths
