"""The audit report: one self-contained HTML page for hospital IT staff.

:func:`render_report` turns a :class:`~coordinator.audit.history.History`
(and, when the replay ran, its :class:`~coordinator.audit.replay.ReplayReport`)
into a single HTML page: a verdict banner, the per-round verdict table, plots
(validation metric, participants, contribution scores, votes, gas) and the
governance record (members, datasets with their policies, proposals).

Words the page uses with one meaning each: a **member** is any organisation
in the consortium (the coordinator's organisation is one); a **data holder**
is a member that registered a dataset (the hospitals). The metric recorded
each round is a **validation** metric -- each data holder scores the
aggregate on its own held-out rows, the coordinator records the
sample-weighted mean -- never a test on independent data. Headline numbers
come from each proposal's last **closed** round. A **contribution score** is a
data holder's share of what the round's updates measurably contributed, by the
plan's ``[contribution]`` method (:data:`fedchain.modelcard.SCORE_MEANING`);
the page plots them per round and accumulated per data holder. When the caller passes the
approved plans (``plans``, verified against their on-chain hashes) the page
names each proposal's model, strategy and metric.

The page loads nothing: styles are inline, the plots are SVG documents made by
matplotlib and embedded as ``data:`` images, there is no script, and a
Content-Security-Policy forbids the browser to fetch anything else. Every
string that comes from the chain (member, dataset and purpose names, CIDs,
problem sentences that quote them) is escaped, control and bidi-override
characters are removed, and in plots mathtext is off, so a member cannot
inject markup into an auditor's browser or break the plots with its name.

Plots are drawn on :class:`matplotlib.figure.Figure` objects directly (no
``pyplot``, no global backend switch) inside :func:`matplotlib.rc_context`,
so rendering never changes the backend or rc settings of other code in the
process; a fixed ``svg.hashsalt`` and no date metadata make the output
byte-for-byte deterministic for the same input.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import re
import tempfile
import unicodedata
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import matplotlib
import numpy as np
from matplotlib import colormaps
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter

from fedchain.coordinator.audit.history import (
    APPROVED,
    History,
    ProposalRecord,
    RoundRecord,
)
from fedchain.errors import FedchainError
from fedchain.modelcard import SCORE_MEANING

# Kept in step with coordinator.audit.replay (not imported: replay pulls in torch).
VERIFIED = "VERIFIED"
DISCREPANCY = "DISCREPANCY"
UNVERIFIABLE = "UNVERIFIABLE"

_ADDRESS = re.compile(r"(?<![0-9a-zA-Z])0x[0-9a-fA-F]{40}(?![0-9a-fA-F])")  # not a prefix of a hash
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
_RC = {
    "svg.hashsalt": "fedchain-audit-report",
    "svg.fonttype": "path",
    "text.parse_math": False,  # a '$' in a member's name must not become mathtext
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": "#dde3ea",
    "grid.linewidth": 0.8,
    "legend.frameon": False,
    "legend.fontsize": 9,
}
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
            "#7f7f7f", "#d62728", "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5", "#c49c94", "#f7b6d2"]
_DOT = ' <span class="explain">·</span> '
_VOTE_COLORS = {"yes": "#2e7d32", "no": "#c62828", "abstain": "#9e9e9e", "did not vote": "#e0e0e0"}


# -- text helpers -------------------------------------------------------------------

def _no_controls(text) -> str:
    """Control and format characters (NULs, newlines, bidi overrides) become spaces."""
    return "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in str(text))


def _clean(text, limit: int | None = None) -> str:
    """Chain text made safe to show on one line, at most ``limit`` characters."""
    s = " ".join(_no_controls(text).split()) or "(empty)"
    if limit is not None and len(s) > limit:
        s = s[: limit - 1] + "…"
    return s


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _short(addr: str) -> str:
    return f"{addr[:6]}…{addr[-4:]}" if len(addr) > 12 else addr


def _short_hash(h: str) -> str:
    return f"{h[:10]}…{h[-6:]}" if len(h) > 20 else h


class _Names:
    """Address -> display name (caller's names first, then the on-chain member names)."""

    def __init__(self, history: History, member_names: dict[str, str] | None) -> None:
        self.names: dict[str, str] = {}
        for _block, addr in history.coordinators:
            self.names[addr.lower()] = "coordinator"
        for addr, m in history.members.items():
            self.names[addr.lower()] = _clean(m.name, 60)
        for addr, name in (member_names or {}).items():
            self.names[addr.lower()] = _clean(name, 60)
        counts: dict[str, int] = {}
        for n in self.names.values():
            counts[n] = counts.get(n, 0) + 1
        self._dupes = {n for n, c in counts.items() if c > 1}

    def name(self, addr: str) -> str | None:
        return self.names.get(addr.lower())

    def label(self, addr: str, limit: int = 26) -> str:
        """Plain text for plots: the name (with a short address when two members share it)."""
        n = self.name(addr)
        if n is None:
            return _short(addr)
        if n in self._dupes:
            return f"{_clean(n, limit - 12)} ({_short(addr)})"
        return _clean(n, limit)

    def html(self, addr: str) -> str:
        n = self.name(addr)
        full = _e(addr)
        if n is None:
            return f'<code class="addr" title="{full}">{_e(_short(addr))}</code>'
        return f'<bdi class="who">{_e(n)}</bdi> <code class="addr" title="{full}">{_e(_short(addr))}</code>'

    def chips(self, addrs: list[str]) -> str:
        """A compact list: names (full address on hover), a short address where there is no name."""
        if not addrs:
            return ""
        items = []
        for a in addrs:
            n = self.name(a)
            if n is None or n in self._dupes:
                items.append(self.html(a))
            else:
                items.append(f'<bdi class="who" title="{_e(a)}">{_e(_clean(n, 32))}</bdi>')
        count = f'<span class="explain small">{len(addrs)}:</span> ' if len(addrs) > 3 else ""
        return count + '<span class="sep">, </span>'.join(f'<span class="chip">{i}</span>' for i in items)

    def rich(self, text: str) -> str:
        """Escape a sentence and show the member name next to every address it quotes."""
        text = _no_controls(text)
        out, pos = [], 0
        for m in _ADDRESS.finditer(text):
            out.append(_e(text[pos:m.start()]))
            out.append(self.html(m.group(0)))
            pos = m.end()
        out.append(_e(text[pos:]))
        return "".join(out)


def _when(ts: int) -> str:
    if not ts:
        return "never"
    try:
        return datetime.fromtimestamp(int(ts), tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (OverflowError, OSError, ValueError):
        return f"unix time {int(ts)}"


def _status_class(status: str) -> str:
    if status == VERIFIED:
        return "ok"
    if status == DISCREPANCY:
        return "bad"
    if status == UNVERIFIABLE:
        return "warn"
    if status.startswith("FAILED"):
        return "warn"
    if status.startswith("OPEN"):
        return "info"
    return "neutral"


def _chain_status(r: RoundRecord) -> str:
    if r.closed is not None:
        return "CLOSED"
    if r.failed_block is not None:
        return "FAILED (no aggregate)"
    return "OPEN (not closed yet)"


def _proposal_state(p: ProposalRecord) -> str:
    if p.cancelled_block is not None:
        return "Cancelled"
    return p.final_state or "Voting"


# -- plots --------------------------------------------------------------------------

def _svg_img(fig, alt: str) -> str:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "Glyph missing from font" for exotic names
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": "fedchain audit report"})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img class="plot" alt="{_e(alt)}" src="data:image/svg+xml;base64,{data}">'


def _new_fig(width: float = 9.0, height: float = 3.4):
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def _legend_outside(ax, handles, labels) -> None:
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _metric_of(plans: dict, pid: int) -> str | None:
    plan = plans.get(pid)
    return getattr(plan, "metric", None)


class _Plots:
    def __init__(self, history: History, keys: list[tuple[int, int]], verdicts: dict, names: _Names,
                 member_order: list[str], plans: dict | None = None) -> None:
        self.h = history
        metrics = {_metric_of(plans or {}, pid) for pid, _r in keys}
        #: the validation metric's name when every plotted proposal names the same one (else a generic word)
        self.metric = metrics.pop() if len(metrics) == 1 and None not in metrics else None
        self.keys = keys
        self.verdicts = verdicts
        self.names = names
        self.color = {a: _PALETTE[i % len(_PALETTE)] for i, a in enumerate(member_order)}
        self.score_note = ""
        multi = len({pid for pid, _ in keys}) > 1
        self.xlabels = [f"P{pid}·R{rnd}" if multi else str(rnd) for pid, rnd in keys]
        self.xtitle = "proposal · round" if multi else (f"round (proposal #{keys[0][0]})" if keys else "round")

    def _segments(self) -> list[list[int]]:
        """Index runs of the same proposal, so lines do not join one proposal's rounds to the next."""
        segs: list[list[int]] = []
        for i, (pid, _r) in enumerate(self.keys):
            if segs and self.keys[segs[-1][-1]][0] == pid:
                segs[-1].append(i)
            else:
                segs.append([i])
        return segs

    def _round_axis(self, ax) -> None:
        step = max(1, math.ceil(len(self.keys) / 30))  # at most ~30 labels
        ax.set_xticks(range(0, len(self.keys), step), self.xlabels[::step],
                      rotation=0 if len(self.keys) <= 14 else 60)
        ax.set_xlabel(self.xtitle)
        ax.set_xlim(-0.6, len(self.keys) - 0.4)
        ax.grid(axis="x", visible=False)
        segs = self._segments()
        if len(segs) > 1:
            for seg in segs[1:]:
                ax.axvline(seg[0] - 0.5, color="#90a4ae", lw=1, ls=":")

    def _line(self, ax, ys, **kw):
        first = True
        handle = None
        for seg in self._segments():
            h, = ax.plot(seg, [ys[i] for i in seg], **(kw if first else {k: v for k, v in kw.items() if k != "label"}))
            handle = handle or h
            first = False
        return handle

    def accuracy(self) -> str | None:
        rounds = [self.h.rounds.get(k) for k in self.keys]
        glob = [r.global_metric_ppm / 1e6 if r is not None and r.global_metric_ppm is not None else math.nan for r in rounds]
        per: dict[str, list[float]] = {}
        for i, r in enumerate(rounds):
            if r is None:
                continue
            sums: dict[str, list[float]] = {}
            for ev in r.evaluations:
                w = max(int(ev.get("n_samples", 0)), 1)
                s = sums.setdefault(ev["member"], [0.0, 0.0])
                s[0] += ev["metric_ppm"] / 1e6 * w
                s[1] += w
            for member, (total, weight) in sums.items():
                per.setdefault(member, [math.nan] * len(self.keys))[i] = total / weight
        if all(math.isnan(g) for g in glob) and not per:
            return None
        fig, ax = _new_fig()
        handles, labels = [], []
        for member in sorted(per, key=lambda a: list(self.color).index(a) if a in self.color else len(self.color)):
            h = self._line(ax, per[member], color=self.color.get(member, "#607d8b"), lw=1.4, ls="--",
                           marker="o", ms=4, alpha=0.9, label="m")
            handles.append(h)
            labels.append(self.names.label(member))
        if not all(math.isnan(g) for g in glob):
            h = self._line(ax, glob, color="#111111", lw=2.6, marker="D", ms=6, label="g", zorder=5)
            handles.insert(0, h)
            labels.insert(0, "sample-weighted mean (recorded on chain)")
        values = [v for v in glob + [x for ys in per.values() for x in ys] if not math.isnan(v)]
        if self.metric == "loss":
            ax.set_ylim(0.0, max(values + [0.0]) * 1.1 or 1.0)
        else:
            ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
            lo, hi = min(values + [1.0]), max(values + [1.0])
            ax.set_ylim(max(0.0, math.floor(lo * 10) / 10 - 0.05), hi + (0.02 if hi > 1.0 else 0.0))
        what = f"validation {self.metric}" if self.metric else "validation metric"
        ax.set_ylabel(what)
        ax.set_title(f"{what[0].upper()}{what[1:]} of the aggregated model after each round")
        self._round_axis(ax)
        _legend_outside(ax, handles, labels)
        return _svg_img(fig, f"Line chart: {what} of the aggregated model, at each data holder and their "
                             "sample-weighted mean, per round")

    def participants(self) -> str | None:
        if not self.keys:
            return None
        committed = [len(self.h.rounds[k].commits) if k in self.h.rounds else 0 for k in self.keys]
        have_verified = any(k in self.verdicts for k in self.keys)
        fig, ax = _new_fig(height=3.0)
        x = range(len(self.keys))
        width = 0.38 if have_verified else 0.6
        handles, labels = [], []
        off = -width / 2 if have_verified else 0.0
        handles.append(ax.bar([i + off for i in x], committed, width, color="#90caf9", edgecolor="#1565c0"))
        labels.append("updates committed on chain")
        if have_verified:
            ver = [len(self.verdicts[k].participants) if k in self.verdicts else 0 for k in self.keys]
            handles.append(ax.bar([i + width / 2 for i in x], ver, width, color="#a5d6a7", edgecolor="#2e7d32"))
            labels.append("updates verified by the replay")
        mins = [self.h.proposals[pid].min_participants if pid in self.h.proposals else math.nan for pid, _ in self.keys]
        if not all(math.isnan(m) for m in mins):
            h, = ax.plot(list(x), mins, ls="none", marker="_", ms=28, mew=2.2, color="#c62828")
            handles.append(h)
            labels.append("minimum the plan requires")
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("data holders")
        ax.set_title("Participants per round")
        self._round_axis(ax)
        _legend_outside(ax, handles, labels)
        return _svg_img(fig, "Bar chart: participants per round")

    def scores(self) -> str | None:
        keys = [k for k in self.keys if k in self.verdicts and self.verdicts[k].scores]
        if not keys:
            return None
        table: dict[tuple[int, int], dict[str, float]] = {
            k: {a.lower(): float(s) for a, s in self.verdicts[k].scores.items() if math.isfinite(float(s))}
            for k in keys}
        keys = [k for k in keys if table[k]]
        if not keys:
            return None
        members = sorted({a for sc in table.values() for a in sc},
                         key=lambda a: (list(self.color).index(a) if a in self.color else len(self.color), a))
        if len(members) <= 6 and len(members) * len(keys) <= 48:
            return self._score_bars(keys, members, table)
        return self._score_heatmap(keys, members, table)

    def accumulated(self) -> str | None:
        """Each data holder's scores summed over every round the replay recomputed (all proposals)."""
        totals: dict[str, float] = {}
        for k in self.keys:
            v = self.verdicts.get(k)
            for a, s in (v.scores.items() if v is not None else ()):
                if math.isfinite(float(s)):
                    totals[a.lower()] = totals.get(a.lower(), 0.0) + float(s)
        if not totals:
            return None
        members = sorted(totals, key=lambda a: (-totals[a], a))
        fig, ax = _new_fig(height=max(2.2, 0.34 * len(members) + 1.2))
        ax.barh(range(len(members)), [totals[m] for m in members],
                color=[self.color.get(m, "#607d8b") for m in members])
        ax.set_yticks(range(len(members)), [self.names.label(m) for m in members])
        ax.invert_yaxis()
        ax.set_xlabel("accumulated contribution (rounds' worth)")
        ax.set_title("Contribution of each data holder, summed over every round")
        return _svg_img(fig, "Bar chart: each hospital's contribution scores summed over all rounds")

    def _score_bars(self, keys, members, table) -> str:
        fig, ax = _new_fig(height=3.4)
        group = 0.8
        width = group / len(members)
        handles, labels = [], []
        for j, member in enumerate(members):
            xs = [self.keys.index(k) - group / 2 + width * (j + 0.5) for k in keys if member in table[k]]
            ys = [table[k][member] for k in keys if member in table[k]]
            handles.append(ax.bar(xs, ys, width * 0.92, color=self.color.get(member, "#607d8b")))
            labels.append(self.names.label(member))
        ax.axhline(0, color="#455a64", lw=0.8)
        ax.set_ylabel("contribution score (share of the round)")
        ax.set_title("Contribution score of each data holder per round (recomputed by the replay)")
        self._round_axis(ax)
        _legend_outside(ax, handles, labels)
        return _svg_img(fig, "Grouped bar chart: contribution score of each hospital per round")

    def _score_heatmap(self, keys, members, table) -> str:
        data = np.array([[table[k].get(m, np.nan) for k in keys] for m in members], dtype=float)
        lo, hi = float(np.nanmin(data)), float(np.nanmax(data))
        if lo < 0 < hi:
            norm, cmap = TwoSlopeNorm(vcenter=0.0, vmin=lo, vmax=hi), colormaps["RdBu"]
        else:
            norm, cmap = Normalize(vmin=min(lo, 0.0), vmax=max(hi, 1e-12)), colormaps["Blues"]
        cmap = cmap.with_extremes(bad="#9aa5ad")
        self.score_note = " Grey cells: no verified update from that hospital in that round."
        fig, ax = _new_fig(width=9.0, height=max(2.6, 0.32 * len(members) + 1.6))
        im = ax.imshow(np.ma.masked_invalid(data), aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
        if data.size <= 160:
            for (i, j), v in np.ndenumerate(data):
                if not np.isnan(v):
                    r, g, b, _a = cmap(norm(v))
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "#212121")
        labels = [self.xlabels[self.keys.index(k)] for k in keys]
        step = max(1, math.ceil(len(keys) / 30))
        ax.set_xticks(range(0, len(keys), step), labels[::step], rotation=0 if len(keys) <= 14 else 60)
        ax.set_yticks(range(len(members)), [self.names.label(m) for m in members])
        ax.set_xlabel(self.xtitle)
        ax.grid(False)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        fig.colorbar(im, ax=ax, label="contribution score (share of the round)", shrink=0.9, pad=0.02)
        ax.set_title("Contribution score of each data holder per round (recomputed by the replay)")
        return _svg_img(fig, "Heat map: contribution score of each hospital (rows) per round (columns)")

    def votes(self, eligible: dict[int, int]) -> str | None:
        props = sorted(self.h.proposals.values(), key=lambda p: p.id)
        if not props:
            return None
        fig, ax = _new_fig(width=9.0, height=max(2.2, 0.5 * len(props) + 1.3))
        ys = range(len(props))
        left = [0] * len(props)
        handles, labels = [], []
        for choice in ("yes", "no", "abstain", "did not vote"):
            if choice == "did not vote":
                vals = [max(eligible.get(p.id, 0) - len(p.votes), 0) for p in props]
            else:
                vals = [sum(1 for v in p.votes.values() if v == choice) for p in props]
            if not any(vals):
                continue
            h = ax.barh(list(ys), vals, 0.6, left=left, color=_VOTE_COLORS[choice], edgecolor="white")
            for y, v, l in zip(ys, vals, left):
                if v:
                    ax.text(l + v / 2, y, str(v), ha="center", va="center", fontsize=9,
                            color="white" if choice in ("yes", "no") else "#212121")
            left = [a + b for a, b in zip(left, vals)]
            handles.append(h)
            labels.append(choice)
        ax.set_yticks(list(ys), [f"#{p.id} {_clean(p.purpose, 22)}" for p in props])
        ax.invert_yaxis()
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("members")
        ax.grid(axis="y", visible=False)
        ax.set_title("Votes per proposal")
        _legend_outside(ax, handles, labels)
        return _svg_img(fig, "Horizontal stacked bar chart: yes, no and abstain votes per proposal")

    def privacy(self) -> str | None:
        """ε spent per dataset (stacked by proposal) against its budget, from the PrivacySpent events."""
        rows = []
        for d in sorted(self.h.datasets.values(), key=lambda d: d.name):
            pol = d.policies[-1] if d.policies else None
            budget = (pol.max_epsilon_milli / 1000) if pol and pol.max_epsilon_milli else None
            by_proposal: dict[int, float] = {}
            for s in d.privacy_spends:
                by_proposal[s.proposal_id] = by_proposal.get(s.proposal_id, 0.0) + s.epsilon_micro / 1e6
            if by_proposal or budget is not None:
                rows.append((d.name, budget, by_proposal))
        if not any(r[2] for r in rows):
            return None
        fig, ax = _new_fig(height=max(2.2, 0.5 * len(rows) + 1.2))
        proposals = sorted({pid for _n, _b, spent in rows for pid in spent})
        colors = colormaps["tab10"]
        left = [0.0] * len(rows)
        for i, pid in enumerate(proposals):
            vals = [spent.get(pid, 0.0) for _n, _b, spent in rows]
            ax.barh(range(len(rows)), vals, 0.5, left=left, color=colors(i % 10), label=f"proposal {pid}")
            left = [a + b for a, b in zip(left, vals)]
        for y, (_n, budget, _s) in enumerate(rows):
            if budget is not None:
                ax.plot([budget, budget], [y - 0.35, y + 0.35], color="#b71c1c", linewidth=2.5,
                        label="budget" if y == next(i for i, r in enumerate(rows) if r[1] is not None) else None)
        ax.set_yticks(range(len(rows)), [_clean(n, 30) for n, _b, _s in rows])
        ax.invert_yaxis()
        ax.set_xlabel("ε (differential privacy)")
        ax.set_title("Privacy spent per dataset, against its budget")
        handles, labels = ax.get_legend_handles_labels()
        _legend_outside(ax, handles, labels)
        return _svg_img(fig, "Horizontal bar chart: epsilon spent on each dataset, stacked by proposal, "
                             "with the dataset's budget marked")

    def gas(self) -> str | None:
        if not self.keys:
            return None
        gas = [self.h.rounds[k].gas if k in self.h.rounds else 0 for k in self.keys]
        if not any(gas):
            return None

        fig, ax = _new_fig(height=2.8)
        ax.bar(range(len(self.keys)), gas, 0.6, color="#ffcc80", edgecolor="#e65100")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:,.0f}"))
        ax.set_ylabel("gas")
        ax.set_title("Gas used by each round's transactions")
        self._round_axis(ax)
        return _svg_img(fig, "Bar chart: gas used per round")


# -- the page -----------------------------------------------------------------------

_STYLE = """
:root { --ok:#1b7f3b; --ok-bg:#e3f4e8; --bad:#b3261e; --bad-bg:#fde7e6; --warn:#8a5a00; --warn-bg:#fff2d6;
        --info:#1a5fa8; --info-bg:#e4effb; --muted:#5f6b7a; --line:#d9dee5; }
* { box-sizing: border-box; }
body { margin: 0; background: #f4f6f9; color: #1d2733;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; min-height: 100vh; }
h1 { font-size: 28px; margin: 0 0 4px; }
h2 { font-size: 21px; margin: 36px 0 8px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 17px; margin: 22px 0 6px; }
.explain, p.lead, p.note { color: var(--muted); }
p.explain, p.lead, p.note { margin: 4px 0 12px; }
div.explain { margin-top: 3px; }
p.note { font-style: italic; }
nav { margin: 12px 0 4px; font-size: 14px; }
nav a { margin-right: 14px; color: var(--info); text-decoration: none; }
.banner { border-radius: 8px; padding: 14px 18px; margin: 18px 0; font-size: 17px; font-weight: 600; border: 1px solid; }
.banner.ok { background: var(--ok-bg); color: var(--ok); border-color: #a8d5b5; }
.banner.bad { background: var(--bad-bg); color: var(--bad); border-color: #f1b0ab; }
.banner.warn { background: var(--warn-bg); color: var(--warn); border-color: #f0d08a; }
.banner.neutral { background: #eef1f5; color: #34414f; border-color: var(--line); }
.banner small { display: block; font-weight: 400; font-size: 14px; color: #34414f; margin-top: 4px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 8px 0 4px; }
.card { flex: 1 1 150px; border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; background: #fafbfd; }
.card b { display: block; font-size: 24px; }
.card span { color: var(--muted); font-size: 13px; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 16px; font-size: 14px; }
th, td { border-bottom: 1px solid var(--line); padding: 7px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f5; font-weight: 600; }
tbody tr:nth-child(even) td { background: #fafbfc; }
td.num, th.num { text-align: right; white-space: nowrap; }
tr.bad td { background: #fff6f5 !important; }
.badge { display: inline-block; padding: 2px 9px; border-radius: 999px; font-weight: 700; font-size: 12.5px;
         white-space: nowrap; border: 1px solid; }
.badge.ok { color: var(--ok); background: var(--ok-bg); border-color: #a8d5b5; }
.badge.bad { color: #fff; background: var(--bad); border-color: var(--bad); }
.badge.warn { color: var(--warn); background: var(--warn-bg); border-color: #f0d08a; }
.badge.info { color: var(--info); background: var(--info-bg); border-color: #a9c8ee; }
.badge.neutral { color: #34414f; background: #eef1f5; border-color: var(--line); }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; }
code.addr { color: var(--muted); white-space: nowrap; font-size: 12px; }
.small { font-size: 12.5px; }
code.cid { overflow-wrap: anywhere; word-break: break-all; }
bdi.who { font-weight: 600; overflow-wrap: anywhere; }
bdi.nowrap { white-space: nowrap; }
span.chip, span.chip bdi.who { white-space: nowrap; font-weight: 500; }
ul.problems { margin: 0; padding-left: 18px; color: var(--bad); }
ul.problems li { margin: 2px 0; overflow-wrap: anywhere; }
ul.plain { margin: 0; padding-left: 18px; }
ul.legend { margin: 6px 0 14px; padding-left: 18px; color: #34414f; }
figure { margin: 14px 0 22px; }
img.plot { display: block; max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 13.5px; margin-top: 4px; }
.empty { padding: 14px 16px; border: 1px dashed var(--line); border-radius: 8px; color: var(--muted); background: #fafbfd; }
footer { margin-top: 40px; color: var(--muted); font-size: 13px; border-top: 1px solid var(--line); padding-top: 10px; }
@media print { body { background: #fff; } main { padding: 0; } nav { display: none; } }
"""


def _empty(text: str) -> str:
    return f'<div class="empty">{_e(text)}</div>'


def _figure(img: str | None, caption: str, empty_text: str) -> str:
    if img is None:
        return f"<figure>{_empty(empty_text)}</figure>"
    return f"<figure>{img}<figcaption>{_e(caption)}</figcaption></figure>"


def _problems_html(items: Iterable[str], names: _Names) -> str:
    items = list(items)
    if not items:
        return ""
    return '<ul class="problems">' + "".join(f"<li>{names.rich(p)}</li>" for p in items) + "</ul>"


def _eligible(history: History, p: ProposalRecord) -> int:
    return sum(1 for m in history.members.values() if m.member_at(p.block) and m.joined_block < p.block)


def _last_closed(history: History, pid: int) -> tuple[RoundRecord | None, RoundRecord | None]:
    """The proposal's last closed round, and its last closed round with a recorded metric (None: none)."""
    closed = [r for (p, _n), r in sorted(history.rounds.items()) if p == pid and r.closed is not None]
    measured = [r for r in closed if r.global_metric_ppm is not None]
    return (closed[-1] if closed else None), (measured[-1] if measured else None)


def _metric_value(ppm: int, metric: str | None) -> str:
    return f"{ppm / 1e6:.4f}" if metric == "loss" else f"{ppm / 1e4:.1f}%"


def _model_words(plan) -> str:
    """'logreg, 62 parameters · strategy fedavg · metric accuracy' for a plan (duck-typed: TrainingPlan)."""
    params = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in plan.strategy.params().items())
    return (f"{plan.model.kind}, {plan.model.size.parameters:,} parameters · strategy {plan.strategy.name}"
            + (f" ({params})" if params else "") + f" · metric {plan.metric}")


def _release_html(history: History, pid: int) -> str:
    """The proposal's released models and the models marked withdrawn (a revoked dataset in their lineage)."""
    parts = []
    released = sorted(r for (p, r) in history.released if p == pid)
    if released:
        parts.append('<span class="badge ok">released</span> ' + ", ".join(
            f"round {r} (vote #{history.released[(pid, r)]})" for r in released))
    marked = sorted((r, ws) for (p, r), ws in history.withdrawals.items() if p == pid)
    if marked:
        datasets = sorted({history.dataset_name(w.dataset_id) for _r, ws in marked for w in ws})
        parts.append('<span class="badge bad">withdrawn</span> round(s) ' + ", ".join(str(r) for r, _ws in marked)
                     + ' <span class="explain">(consent withdrawn: '
                     + ", ".join(f'<bdi class="nowrap">{_e(_clean(d, 40))}</bdi>' for d in datasets)
                     + " revoked by its owner; a marked model is not released)</span>")
    return "".join(f'<div class="small">{x}</div>' for x in parts)


def data_holders(history: History) -> set[str]:
    """Members that registered a dataset (the hospitals); the coordinator's organisation need not be one."""
    return {d.owner for d in history.datasets.values()}


def render_report(history: History, report=None, *, title: str, member_names: dict[str, str] | None = None,
                  subtitle: str | None = None, note: str | None = None, plans: dict | None = None) -> str:
    """One self-contained HTML page for ``history`` (and the replay ``report``, if it ran).

    ``member_names`` names addresses the chain does not (or overrides it);
    ``subtitle`` says where the data came from; ``note`` explains why there is
    no replay, if there is none; ``plans`` maps proposal ids to their approved
    :class:`~fedchain.plan.TrainingPlan` (verified against the chain, see
    :mod:`fedchain.coordinator.audit.plans`), to name each proposal's model,
    strategy and metric.
    """
    plans = dict(plans or {})

    names = _Names(history, member_names)
    member_order = [a for a, _m in sorted(history.members.items(), key=lambda kv: (kv[1].joined_block, kv[1].seq, kv[0]))]
    verdicts = {(v.proposal_id, v.round): v for v in (report.rounds if report is not None else [])}
    keys = sorted(set(history.rounds) | set(verdicts))
    eligible = {p.id: _eligible(history, p) for p in history.proposals.values()}

    # Problems: the replay's when it ran, otherwise the checks the events alone allow.
    if report is not None:
        governance_problems = list(report.governance)
        round_problems = {k: list(v.problems) for k, v in verdicts.items()}
    else:
        governance_problems = list(history.problems)
        for p in sorted(history.proposals.values(), key=lambda p: p.id):
            governance_problems.extend(history.proposal_problems(p))
        round_problems = {k: history.round_governance_problems(r) for k, r in history.rounds.items()}

    with matplotlib.rc_context(_RC):
        plots = _Plots(history, keys, verdicts, names, member_order, plans)
        img_acc = plots.accuracy()
        img_part = plots.participants()
        img_scores = plots.scores()
        img_total = plots.accumulated()
        img_votes = plots.votes(eligible)
        img_gas = plots.gas()
        img_privacy = plots.privacy()

    out: list[str] = []
    w = out.append
    w("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n")
    w(f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n')
    w('<meta name="viewport" content="width=device-width, initial-scale=1">\n')
    w('<meta name="referrer" content="no-referrer">\n')
    w(f"<title>{_e(_clean(title))}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n<main>\n")
    w(f"<h1>{_e(_clean(title))}</h1>\n")
    if subtitle:
        w(f'<p class="lead">{_e(subtitle)}</p>\n')
    w('<nav><a href="#verdicts">Round verdicts</a><a href="#model">Model &amp; participation</a>'
      '<a href="#governance">Governance</a><a href="#costs">Costs</a></nav>\n')

    # -- banner and key figures ------------------------------------------------------
    n_closed = sum(1 for r in history.rounds.values() if r.closed is not None)
    n_failed = sum(1 for r in history.rounds.values() if r.closed is None and r.failed_block is not None)
    n_open = len(history.rounds) - n_closed - n_failed
    if report is not None:
        n_ok = sum(1 for v in report.rounds if v.status == VERIFIED)
        n_bad = sum(1 for v in report.rounds if v.status == DISCREPANCY)
        n_unv = sum(1 for v in report.rounds if v.status == UNVERIFIABLE)
        anchor = report.anchor
        anchor_html = f'<br>Trail {_e(anchor.status)}: {names.rich(anchor.detail)}'
        if not keys and not governance_problems and report.status != DISCREPANCY:
            w('<div class="banner neutral">No rounds yet: nothing to replay.'
              f'<small>The governance record below was checked and shows no problems.{anchor_html}</small></div>\n')
        elif report.status == VERIFIED:
            w(f'<div class="banner ok">All checks passed: {n_ok} of {len(report.rounds)} round(s) VERIFIED, '
              'no governance problems.<small>The auditor re-ran every aggregation from the committed, encrypted updates '
              f'and obtained exactly the bytes recorded on chain.{anchor_html}</small></div>\n')
        elif report.status == UNVERIFIABLE:
            what = []
            if n_unv:
                what.append(f"{n_unv} round(s) UNVERIFIABLE")
            if anchor.status != "ANCHORED":
                what.append(f"the trail is {anchor.status}")
            w(f'<div class="banner warn">Nothing contradicts the record, but not everything could be checked: '
              f'{_e(", ".join(what))}.<small>{n_ok} of {len(report.rounds)} round(s) VERIFIED. Each round says what '
              f'the auditor could not check and why.{anchor_html}</small></div>\n')
        else:
            what = []
            if n_bad:
                what.append(f"{n_bad} round(s) with a DISCREPANCY")
            if governance_problems:
                what.append(f"{len(governance_problems)} governance problem(s)")
            if anchor.status == DISCREPANCY:
                what.append("a trail that is not the chain's")
            w(f'<div class="banner bad">Discrepancies found: {_e(", ".join(what))}.'
              f'<small>{n_ok} of {len(report.rounds)} round(s) VERIFIED. Each problem is listed below; '
              f'please forward this report to the consortium\'s audit contact.{anchor_html}</small></div>\n')
    else:
        why = note or "The rounds were not replayed (no content store or auditor key was available)."
        n_found = len(governance_problems) + sum(len(v) for v in round_problems.values())
        if n_found:
            w(f'<div class="banner bad">Not replayed, and the event history already shows {n_found} problem(s).'
              f'<small>{_e(why)}</small></div>\n')
        else:
            w(f'<div class="banner neutral">Not replayed: the page shows what the chain records, with the governance '
              f'checks the events alone allow.<small>{_e(why)}</small></div>\n')

    active = {a for a, m in history.members.items() if m.left_block is None}
    holders = data_holders(history) & active
    n_approved = sum(1 for p in history.proposals.values() if p.final_state == APPROVED)
    total_gas = sum(r.gas for r in history.rounds.values())
    # Headline metrics: each proposal's last closed round (held-out validation rows, not a test set).
    measured = [(pid, m) for pid in sorted(history.proposals) if (m := _last_closed(history, pid)[1]) is not None]
    if not measured:
        metric_cards = [("—", "validation metric of the last closed round (none closed yet)")]
    elif len(measured) > 3:
        metric_cards = [(str(len(measured)), "proposals with a trained model: each one's validation metric is in "
                                             "the proposals table")]
    else:
        metric_cards = [(_metric_value(m.global_metric_ppm, _metric_of(plans, pid)),
                         f"validation {_metric_of(plans, pid) or 'metric'} of proposal #{pid}, round {m.round} "
                         "(its last closed round with a metric)") for pid, m in measured]
    cards = [
        (str(len(active)), "members (every organisation, the coordinator's included)"),
        (str(len(holders)), "data holders (members with a registered dataset)"),
        (str(len(history.datasets)), "datasets registered"),
        (f"{n_approved} / {len(history.proposals)}", "proposals approved"),
        (str(len(history.rounds)), f"rounds ({n_closed} closed, {n_failed} failed, {n_open} open)"),
        *metric_cards,
        (f"{total_gas:,}", "gas used by rounds"),
    ]
    w('<div class="cards">' + "".join(f'<div class="card"><b>{_e(v)}</b><span>{_e(t)}</span></div>' for v, t in cards)
      + "</div>\n")

    # -- verdicts ---------------------------------------------------------------------
    w('<h2 id="verdicts">Round verdicts</h2>\n')
    if report is not None:
        w('<p class="explain">For every training round the auditor fetched each hospital\'s committed update, checked '
          'its fingerprint (sha256) against the chain, decrypted it with the auditor key, re-ran the aggregation and '
          'the contribution scores, and compared the result with what the coordinator published.</p>\n')
        w('<ul class="legend">'
          '<li><span class="badge ok">VERIFIED</span> every check ran and passed: each rejection has the reason the '
          'bytes give, the recomputed model and scores are identical to the ones on chain, and the round was closed '
          '(or failed) when the rules allow.</li>'
          '<li><span class="badge bad">DISCREPANCY</span> something does not match; the problems column says what.</li>'
          '<li><span class="badge warn">UNVERIFIABLE</span> nothing contradicts the record, but the auditor could not '
          'check all of it (an update missing from its store, not sealed for it, ...); the problems column says '
          'what and why.</li></ul>\n'
          '<p class="explain">Under each verdict: what the chain says happened to the round (closed, failed with no '
          'model, or still open) and its blocks.</p>\n')
    else:
        w('<p class="explain">Status as recorded on chain. Without the replay the aggregates are not re-derived; '
          'the problems column shows only the governance checks (approved proposal, membership, dataset policy, '
          'deadline) that the events allow.</p>\n')
    if not keys:
        w(_empty("No rounds yet: no proposal has started training. Verdicts will appear here once the first round "
                 "opens.") + "\n")
    else:
        w('<table class="verdicts"><thead><tr><th>Proposal</th><th class="num">Round</th><th>Verdict</th>'
          '<th>Participants</th><th>Problems</th><th>Aggregate model CID</th></tr></thead><tbody>\n')
        for k in keys:
            pid, rnd = k
            r = history.rounds.get(k)
            v = verdicts.get(k)
            if report is not None:
                status = v.status if v is not None else "NOT REPLAYED"
            else:
                status = _chain_status(r) if r is not None else "UNKNOWN"
            probs = round_problems.get(k, [])
            cannot = list(v.unverifiable) if v is not None else []
            cls = _status_class(status)
            if probs and cls == "ok":
                cls = "bad"
            if v is not None:
                parts = v.participants
            else:
                parts = sorted({c.member for c in r.commits}) if r is not None else []
            part_html = names.chips(parts) or '<span class="explain">none</span>'
            if v is not None and v.rejected:
                part_html += '<div class="explain">rejected: ' + "; ".join(
                    f"{names.html(a)} ({_e(_clean(why, 120))})" for a, why in sorted(v.rejected.items())) + "</div>"
            elif v is None and report is None and r is not None and parts:
                part_html += '<div class="explain">(committed updates; not verified)</div>'
            cid = (v.aggregate_cid if v is not None and v.aggregate_cid else
                   (r.closed["aggregate_cid"] if r is not None and r.closed else ""))
            cid_html = f'<code class="cid">{_e(_clean(cid))}</code>' if cid else '<span class="explain">—</span>'
            prob_html = (_problems_html(probs, names) + _problems_html([f"not checked: {c}" for c in cannot], names)
                         or '<span class="explain">none</span>')
            row_cls = ' class="bad"' if cls == "bad" or probs else ""
            blocks = ""
            if r is not None:
                end = r.closed_block if r.closed_block is not None else r.failed_block
                blocks = (f"blocks {_e(r.opened_block)}–{_e(end)}" if end is not None
                          else f"opened at block {_e(r.opened_block)}")
                if report is not None:
                    blocks = f"{_e(_chain_status(r).split(' ')[0].lower())}, {blocks}"
                blocks = f'<div class="explain small">{blocks}</div>'
            w(f'<tr id="round-{pid}-{rnd}"{row_cls}><td>#{pid}</td><td class="num">{rnd}</td>'
              f'<td><span class="badge {cls}">{_e(status)}</span>{blocks}</td><td>{part_html}</td>'
              f"<td>{prob_html}</td><td>{cid_html}</td></tr>\n")
        w("</tbody></table>\n")
    w('<h3>Governance checks</h3>\n')
    if governance_problems:
        w('<p class="explain">Problems with membership, votes or quorum found in the event history:</p>\n')
        w(_problems_html(governance_problems, names) + "\n")
    else:
        w('<p class="explain">No problems: every vote came from an eligible member, vote counts match the events, and '
          'quorum and approval thresholds were applied correctly.</p>\n')

    # -- model & participation ------------------------------------------------------------
    w('<h2 id="model">Model quality and participation</h2>\n')
    no_rounds = "No rounds yet: no training has started, so there is nothing to chart."
    if not keys:
        w(_empty("No rounds yet: the accuracy, participation and contribution charts appear here once the first "
                 "training round opens.") + "\n")
    else:
        w(_figure(img_acc, "Validation metric, not a test: after each closed round every data holder scores the "
                  "aggregated model on its own held-out validation rows (dashed lines) and the coordinator records "
                  "their sample-weighted mean on chain (black). Values are stored on chain in parts per million.",
                  "No evaluations recorded yet."))
        w(_figure(img_part, "How many data holders committed an update in each round"
                  + (", how many of those updates the replay could verify," if verdicts else ",")
                  + " and the minimum the approved plan requires.", no_rounds))
        w(_figure(img_scores, "Contribution scores as recomputed by the auditor's replay: " + SCORE_MEANING
                  + plots.score_note,
                  "Contribution scores come from the replay, which did not run." if report is None
                  else "No contribution scores yet: no round has closed."))
        if img_total is not None:
            w(_figure(img_total, "Accumulated contribution: each data holder's scores summed over every round "
                      "the replay recomputed, across proposals (a round's scores sum to 1, so the total counts "
                      "rounds' worth of contribution; a free-rider's stays at 0).", ""))

    # -- governance -----------------------------------------------------------------------
    w('<h2 id="governance">Governance</h2>\n')
    w('<p class="explain">Who belongs to the consortium, which datasets they registered and under which policy, and '
      'which training proposals were voted on. Names are as the members registered them on chain.</p>\n')
    if history.params:
        q, a = history.params.get("quorum_bps"), history.params.get("approval_bps")
        rules = []
        if q is not None:
            rules.append(f"quorum {int(q) / 100:g}% of eligible members must vote")
        if a is not None:
            rules.append(f"a proposal passes with at least {int(a) / 100:g}% yes among yes + no votes")
        if rules:
            w(f'<p>Voting rules: {_e("; ".join(rules))}.</p>\n')
    w("<h3>Members</h3>\n")
    if not history.members:
        w(_empty("No members admitted yet.") + "\n")
    else:
        w('<p class="explain">Every organisation in the consortium is a member and votes; a data holder is a member '
          'that registered a dataset. The coordinator\'s organisation is a member (nodes read its encryption key '
          'from the member registry) and holds no data unless it registered some.</p>\n')
        w('<table><thead><tr><th>Member</th><th>Role</th><th>Address</th><th class="num">Joined (block)</th>'
          '<th class="num">Left (block)</th><th class="num">Key changes</th></tr></thead><tbody>\n')
        owned: dict[str, int] = {}
        for d in history.datasets.values():
            owned[d.owner] = owned.get(d.owner, 0) + 1
        coordinators = {c for _b, c in history.coordinators}
        for addr in member_order:
            m = history.members[addr]
            roles = []
            if owned.get(addr):
                roles.append(f"data holder ({owned[addr]} dataset{'s' if owned[addr] > 1 else ''})")
            if addr in coordinators:
                roles.append("runs the coordinator")
            w(f'<tr><td><bdi class="who">{_e(_clean(m.name, 60))}</bdi></td><td>{_e(", ".join(roles) or "member")}</td>'
              f'<td><code>{_e(addr)}</code></td>'
              f'<td class="num">{_e(m.joined_block)}</td><td class="num">{"—" if m.left_block is None else _e(m.left_block)}</td>'
              f'<td class="num">{len(m.keys) - 1}</td></tr>\n')
        w("</tbody></table>\n")
    if history.coordinators:
        w('<p>Coordinator: ' + "; ".join(f"{names.html(c)} from block {_e(b)}" for b, c in history.coordinators) + ".</p>\n")

    purpose_text = {p.purpose_hash: _clean(p.purpose, 80) for p in history.proposals.values()}
    w("<h3>Datasets and their policies</h3>\n")
    if not history.datasets:
        w(_empty("No datasets registered yet.") + "\n")
    else:
        w('<table><thead><tr><th>Dataset</th><th>Owner</th><th class="num">Registered (block)</th>'
          '<th>Current policy</th><th class="num">Policy versions</th></tr></thead><tbody>\n')
        for d in sorted(history.datasets.values(), key=lambda d: (d.block, d.id)):
            pol = d.policies[-1] if d.policies else None
            summary: list[str] = []
            if d.revoked_block is not None:
                summary = [f'<strong>revoked at block {_e(d.revoked_block)}</strong>: admits nothing']
            elif pol is None:
                summary = ["no policy set: admits nothing"]
            else:
                if pol.purposes:
                    summary.append("purposes: " + ", ".join(
                        f"“{_e(purpose_text[h])}”" if h in purpose_text else f'<code title="{_e(h)}">{_e(_short_hash(h))}</code>'
                        for h in pol.purposes))
                else:
                    summary.append("any purpose")
                if pol.any_approved:
                    summary.append("any approved proposal")
                else:
                    summary.append("only proposal(s) " + (", ".join(f"#{i}" for i in pol.proposal_ids) or "none"))
                if pol.requesters:
                    summary.append("only when requested by " + names.chips(pol.requesters))
                summary.append("expires " + _e(_when(pol.expiry)))
            w(f'<tr><td><bdi class="who nowrap">{_e(_clean(d.name, 40))}</bdi></td><td>{names.html(d.owner)}</td>'
              f'<td class="num">{_e(d.block)}</td><td>{_DOT.join(summary)}</td>'
              f'<td class="num">{len(d.policies)}</td></tr>\n')
        w("</tbody></table>\n")

    w("<h3>Training proposals</h3>\n")
    if not history.proposals:
        w(_empty("No proposals submitted yet.") + "\n")
    else:
        w('<table><thead><tr><th class="num">#</th><th>Purpose</th><th>Model and strategy</th><th>Proposed by</th>'
          '<th>Datasets</th><th class="num">Rounds</th><th class="num">Min. data holders</th>'
          '<th>Votes (yes / no / abstain)</th><th>State</th><th>Last closed round</th></tr></thead><tbody>\n')
        for p in sorted(history.proposals.values(), key=lambda p: p.id):
            state = _proposal_state(p)
            cls = {"Approved": "ok", "Rejected": "bad", "Cancelled": "neutral"}.get(state, "info")
            yes = sum(1 for v in p.votes.values() if v == "yes")
            no = sum(1 for v in p.votes.values() if v == "no")
            ab = sum(1 for v in p.votes.values() if v == "abstain")
            targets = ", ".join(f"<bdi class=\"nowrap\">{_e(_clean(history.dataset_name(t), 40))}</bdi>" if t in history.datasets
                                else f'<code title="{_e(t)}">{_e(_short_hash(t))}</code>' for t in p.targets)
            plan = plans.get(p.id)
            model_html = (_e(_model_words(plan)) if plan is not None
                          else '<span class="explain">plan not available to this report</span>')
            last_closed, measured_round = _last_closed(history, p.id)
            metric = _metric_of(plans, p.id)
            if last_closed is None:
                last_html = '<span class="explain">none</span>'
            elif measured_round is None:
                last_html = f'round {last_closed.round} <span class="explain">(metric not recorded yet)</span>'
            else:
                last_html = (f"round {measured_round.round}: validation {_e(metric or 'metric')} "
                             f"{_e(_metric_value(measured_round.global_metric_ppm, metric))}")
                if last_closed.round != measured_round.round:
                    last_html += (f' <span class="explain">(round {last_closed.round} closed; its metric is not '
                                  "recorded yet)</span>")
            last_html += _release_html(history, p.id)
            w(f'<tr><td class="num">{p.id}</td><td>{_e(_clean(p.purpose, 160))}'
              f'<div class="explain small">plan <code class="cid">{_e(_clean(p.plan_cid))}</code></div></td>'
              f'<td>{model_html}</td><td>{names.chips([p.proposer])}</td>'
              f"<td>{targets or '—'}</td><td class=\"num\">{p.rounds}</td><td class=\"num\">{p.min_participants}</td>"
              f"<td>{yes} / {no} / {ab} <span class=\"explain\">of {eligible[p.id]} eligible</span></td>"
              f'<td><span class="badge {cls}">{_e(state)}</span></td><td>{last_html}</td></tr>\n')
        w("</tbody></table>\n")
    if img_votes is not None:
        w(_figure(img_votes, "Votes cast on each proposal. Grey: abstentions; light grey: eligible members who did "
                  "not vote.", ""))

    # -- privacy ------------------------------------------------------------------------
    if img_privacy is not None:
        w('<h2 id="privacy">Privacy budgets</h2>\n')
        w(_figure(img_privacy, "Differential privacy (ε) each dataset has spent, per proposal, as the commitments "
                  "stated it on chain (PrivacySpent events); the red mark is the dataset's budget, which the "
                  "contract does not let any commitment exceed.", ""))

    # -- costs --------------------------------------------------------------------------
    w('<h2 id="costs">Costs</h2>\n')
    w(_figure(img_gas, "Gas paid for each round's on-chain transactions (opening, commitments, closing, evaluations). "
              "Gas measures computation on the chain; it is the cost of keeping the audit trail.",
              "No rounds yet: no gas spent on training." if not keys else "No gas recorded for the rounds."))

    w('<footer>Generated by fedchain from the on-chain event history. Reproduce the verdicts yourself with '
      '<code>fedchain audit replay</code>. This page loads no external resources and contains no scripts.</footer>\n')
    w("</main>\n</body>\n</html>\n")
    return "".join(out)


# -- writing ---------------------------------------------------------------------------

def write_report(path, html_text: str) -> None:
    """Write ``html_text`` to ``path`` atomically (a reader sees the old page or the new one, never half)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise FedchainError(f"cannot write the report to {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(html_text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise FedchainError(f"cannot write the report to {path}: {exc.strerror or exc}") from None


def coordinator_names(history: History) -> dict[str, str]:
    """Labels for coordinator addresses that are not members (for ``member_names``)."""
    return {addr: "coordinator" for _b, addr in history.coordinators if addr not in history.members}
