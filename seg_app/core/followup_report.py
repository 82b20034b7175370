"""The one-page follow-up report (PNG) of :mod:`seg_app.core.followup` (Qt-free; matplotlib imported lazily).

One A4 portrait page: the two response categories (each labelled a computed suggestion, not a
diagnosis), the registration numbers, for up to three lesions an axial slice of the baseline and of the
registered follow-up through the lesion with both time points' outlines, a registration check
(checkerboard of the two images), the volume of each lesion and of all lesions over time, and the
lesion table. Slices are shown in the radiological convention (patient right on the image left,
anterior up). matplotlib's Agg canvas is used directly (no pyplot, no GUI backend).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from seg_app.core.followup import DISCLAIMER_SUGGESTION, FollowUpResult, LesionTrack, resample_onto_baseline
from seg_app.core.shape import axial_axis
from seg_app.core.volume import Volume

__all__ = ["render_followup_report"]

_BASE_COLOUR = "#ff3b30"  # baseline outline
_FOLLOW_COLOUR = "#ffd60a"  # follow-up outline


def _view(affine: np.ndarray) -> tuple[int, int, int, bool, bool]:
    """(slice axis, horizontal axis, vertical axis, flip horizontal, flip vertical) of the axial view."""
    ax = axial_axis(affine)
    b, c = [a for a in range(3) if a != ax]
    lin = np.asarray(affine, np.float64)[:3, :3]
    horiz, vert = (b, c) if abs(lin[0, b]) >= abs(lin[0, c]) else (c, b)
    return ax, horiz, vert, bool(lin[0, horiz] > 0), bool(lin[1, vert] > 0)


def _slice(arr: np.ndarray, view: tuple[int, int, int, bool, bool], k: int) -> np.ndarray:
    ax, h, v, fh, fv = view
    s = np.take(arr, int(k), axis=ax)
    if h < v:  # np.take keeps the other axes in ascending order: make it (vertical, horizontal)
        s = s.T
    if fh:
        s = s[:, ::-1]
    if fv:
        s = s[::-1, :]
    return s


def _key_tracks(result: FollowUpResult, n: int = 3) -> list[LesionTrack]:
    """New lesions first, then the largest at either time point."""
    order = sorted(result.tracks, key=lambda t: (not t.is_new, -max(t.baseline.volume_ml, t.followup.volume_ml)))
    return order[:n]


def _track_slice(result: FollowUpResult, baseline: Volume, track: LesionTrack, axis: int) -> int:
    """Baseline-grid slice through the track's largest extent (baseline lesions, else follow-up on baseline)."""
    ids = [i for i in track.baseline_ids]
    mask = np.isin(result.baseline.lesion_map, ids) if ids else np.zeros(baseline.shape, bool)
    if not mask.any():
        pos = [result.followup.lesions[i - 1] for i in track.followup_ids]
        mask = np.isin(result.followup_map_on_baseline, [les.lesion_id for les in pos])
    if not mask.any():
        return baseline.shape[axis] // 2
    counts = mask.sum(axis=tuple(a for a in range(3) if a != axis))
    return int(np.argmax(counts))


def _fmt_pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.0f} %"


def render_followup_report(result: FollowUpResult, baseline: Volume, followup: Volume, *,
                           titles: Sequence[str] = ("baseline", "follow-up"), dates: Sequence[str] = ("", ""),
                           disclaimer: str = "") -> bytes:
    """The report as PNG bytes.

    Args:
        result: :func:`seg_app.core.followup.assess_followup`'s result.
        baseline, followup: the two scans (the follow-up is resampled onto the baseline grid here).
        titles: names of the two scans; dates: their study dates (ISO, "" when unknown).
        disclaimer: the app's research-use line, printed under the title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    base_img = np.asarray(baseline.array[0], np.float32)
    follow_img = resample_onto_baseline(np.asarray(followup.array[0], np.float32), followup.affine, baseline,
                                        result.registration.matrix, order=1)
    finite = base_img[np.isfinite(base_img)]
    lo, hi = np.percentile(finite[:: max(1, finite.size // 200_000)], [1, 99.5]) if finite.size else (0.0, 1.0)
    fl = follow_img[np.isfinite(follow_img)]
    flo, fhi = np.percentile(fl[:: max(1, fl.size // 200_000)], [1, 99.5]) if fl.size else (0.0, 1.0)
    view = _view(baseline.affine)
    ax_k, h, v = view[0], view[1], view[2]
    aspect = baseline.spacing[v] / baseline.spacing[h]

    fig = Figure(figsize=(8.27, 11.69), dpi=110)
    FigureCanvasAgg(fig)
    fig.text(0.5, 0.985, "Follow-up report", ha="center", va="top", fontsize=15, weight="bold")
    sub = f"{titles[0]}{' (' + dates[0] + ')' if dates[0] else ''}  ->  {titles[1]}{' (' + dates[1] + ')' if dates[1] else ''}"
    fig.text(0.5, 0.962, sub, ha="center", va="top", fontsize=9)
    if disclaimer:
        fig.text(0.5, 0.948, disclaimer, ha="center", va="top", fontsize=8, color="#b00020")
    lines = []
    for r in (result.recist, result.rano):
        lines.append(f"{r.criteria}: {r.category} ({r.name}) - {DISCLAIMER_SUGGESTION}")
        lines.append("    " + "; ".join(r.reasons))
    reg = result.registration
    lines.append(f"Registration ({reg.method}): rotation {reg.rotation_deg:.1f} deg, shift {reg.translation_mm:.1f} mm, "
                 f"correlation {_num(reg.correlation_before)} -> {_num(reg.correlation_after)}"
                 + (f", landmark residual {reg.landmark_rms_mm:.1f} mm" if reg.landmark_rms_mm is not None else ""))
    for w in result.warnings[:4]:
        lines.append(f"! {w}")
    block = "\n".join(_wrap(s, 120) for s in lines)
    fig.text(0.04, 0.930, block, ha="left", va="top", fontsize=7.2, family="monospace")

    keys = _key_tracks(result)
    top = 0.930 - 0.0115 * (block.count("\n") + 1) - 0.03
    row_h = min(0.19, (top - 0.27) / 3)
    for row, track in enumerate(keys):
        k = _track_slice(result, baseline, track, ax_k)
        y0 = top - (row + 1) * row_h
        for col, (img, rng, title) in enumerate(((base_img, (lo, hi), titles[0]), (follow_img, (flo, fhi), f"{titles[1]} (registered)"))):
            a = fig.add_axes((0.04 + col * 0.31, y0, 0.29, row_h - 0.02))
            a.imshow(_slice(img, view, k), cmap="gray", vmin=rng[0], vmax=rng[1], aspect=aspect, interpolation="nearest")
            bm = _slice(np.isin(result.baseline.lesion_map, track.baseline_ids), view, k) if track.baseline_ids else None
            fm = _slice(np.isin(result.followup_map_on_baseline, track.followup_ids), view, k) if track.followup_ids else None
            for m, colour, width in ((bm, _BASE_COLOUR, 1.8), (fm, _FOLLOW_COLOUR, 0.8)):  # both visible when equal
                if m is not None and m.any():
                    a.contour(m.astype(np.float32), levels=[0.5], colors=[colour], linewidths=width)
            a.set_xticks([])
            a.set_yticks([])
            a.set_title(f"{title}, slice {k}", fontsize=7)
            if col == 0:
                a.set_ylabel(f"track {track.track_id}: {track.status}", fontsize=7)
        t = fig.add_axes((0.66, y0, 0.31, row_h - 0.02))
        t.axis("off")
        t.text(0, 0.95, _track_text(track), va="top", fontsize=7, family="monospace", transform=t.transAxes)
    n_rows = max(1, len(keys))
    y_low = top - n_rows * row_h - 0.02
    # registration check: checkerboard of baseline and registered follow-up through the largest lesion
    k = _track_slice(result, baseline, keys[0], ax_k) if keys else baseline.shape[ax_k] // 2
    b2, f2 = _slice(base_img, view, k), _slice(follow_img, view, k)
    nb = (np.clip((b2 - lo) / max(hi - lo, 1e-6), 0, 1))
    nf = (np.clip((f2 - flo) / max(fhi - flo, 1e-6), 0, 1))
    yy, xx = np.indices(nb.shape)
    tile = max(4, min(nb.shape) // 8)
    board = np.where(((yy // tile + xx // tile) % 2) == 0, nb, nf)
    chk_h = min(0.22, y_low - 0.03)
    if chk_h > 0.08:
        a = fig.add_axes((0.04, y_low - chk_h, 0.29, chk_h))
        a.imshow(board, cmap="gray", vmin=0, vmax=1, aspect=aspect, interpolation="nearest")
        a.set_xticks([])
        a.set_yticks([])
        a.set_title("registration check (checkerboard)", fontsize=7)
        p = fig.add_axes((0.42, y_low - chk_h + 0.03, 0.53, chk_h - 0.05))
        _volume_plot(p, result, titles, dates)
    fig.text(0.04, 0.012, "Outlines: red baseline, yellow follow-up. Radiological convention (patient right on the "
             "image left). " + DISCLAIMER_SUGGESTION.capitalize() + ".", fontsize=6.5)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width, subsequent_indent="      ")) or text


def _track_text(t: LesionTrack) -> str:
    ch = t.as_dict()["change"]
    return "\n".join([
        f"track {t.track_id} {'(target)' if t.target else ''}",
        f"status   {t.status}",
        f"volume   {t.baseline.volume_ml:.2f} -> {t.followup.volume_ml:.2f} mL ({_fmt_pct(ch['volume_percent'])})",
        f"long ax  {t.baseline.long_axis_mm:.1f} -> {t.followup.long_axis_mm:.1f} mm ({_fmt_pct(ch['long_axis_percent'])})",
        f"product  {t.baseline.product_mm2:.0f} -> {t.followup.product_mm2:.0f} mm2 ({_fmt_pct(ch['bidimensional_product_percent'])})",
    ])


def _volume_plot(a: Any, result: FollowUpResult, titles: Sequence[str], dates: Sequence[str]) -> None:
    xs = [0, 1]
    labels = [d or n for d, n in zip(dates, titles)]
    for t in result.tracks[:10]:
        a.plot(xs, [t.baseline.volume_ml, t.followup.volume_ml], marker="o", linewidth=1,
               linestyle="--" if t.is_new else "-", label=f"track {t.track_id} ({t.status})")
    tot = result.totals
    a.plot(xs, [tot["baseline"]["volume_ml"], tot["followup"]["volume_ml"]], marker="s", color="black", linewidth=2,
           label="all lesions")
    a.set_xticks(xs)
    a.set_xticklabels(labels, fontsize=7)
    a.set_xlim(-0.2, 1.2)
    a.set_ylabel("volume (mL)", fontsize=7)
    a.tick_params(labelsize=7)
    a.set_title("volume over time", fontsize=8)
    a.legend(fontsize=6, loc="upper left", frameon=False)
