"""Terminal line charts (textual-plotext), downsampled to the widget's width."""

from __future__ import annotations

import math

from textual_plotext import PlotextPlot

from synthgap_tui.analysis import downsample


class LineChart(PlotextPlot):
    """Named series of (x, y) points; redrawn on ``set_series`` and on resize."""

    def __init__(self, title: str, xlabel: str = "", ylabel: str = "", log_x: bool = False, **kw) -> None:
        super().__init__(**kw)
        self.title, self.xlabel, self.ylabel, self.log_x = title, xlabel, ylabel, log_x
        self.series: dict[str, tuple[list[float], list[float]]] = {}
        self.hlines: dict[str, float] = {}
        self.lines: list[tuple[str, list[float], list[float]]] = []  # label, downsampled xs, ys

    def set_series(self, series: dict[str, tuple[list[float], list[float]]], hlines: dict[str, float] | None = None) -> None:
        self.series = series
        self.hlines = hlines or {}
        self.redraw()

    def on_resize(self) -> None:
        self.redraw()

    def redraw(self) -> None:
        """Downsample the series to the widget's width; the figure is drawn from them at render."""
        width = max(10, self.size.width - 12)
        self.lines = []
        for name, (xs, ys) in self.series.items():
            # Events may lack a field (a runner without top-5): plot what exists.
            pts = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None and math.isfinite(y)]
            if pts:
                self.lines.append((name[:24], *downsample([p[0] for p in pts], [p[1] for p in pts], width)))
        self.refresh()

    def render(self):
        # plotext's build() log-scales the figure's data in place, so rendering one figure
        # twice took the log of a log (a math domain error): each render draws it afresh.
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(self.title if self.lines else f"{self.title} (no data yet)")
        plt.xlabel(self.xlabel)
        plt.ylabel(self.ylabel)
        for label, xs, ys in self.lines:
            plt.plot(xs, ys, label=label, marker="braille")
        for y in self.hlines.values():
            plt.hline(y)
        if self.log_x and self.lines:
            plt.xscale("log")
        limits = None if self.log_x else padded_limits(self.lines)
        if limits:
            plt.xlim(*limits[0])
            plt.ylim(*limits[1])
        return super().render()


def padded_limits(lines: list[tuple[str, list[float], list[float]]]):
    """Axis ranges for series whose points span no range (one point, a constant): plotext
    would draw a degenerate axis; this gives the point room either side. None otherwise."""
    xs = [x for _, line_xs, _ in lines for x in line_xs]
    ys = [y for _, _, line_ys in lines for y in line_ys]
    if not xs or (max(xs) > min(xs) and max(ys) > min(ys)):
        return None

    def around(values):
        low, high = min(values), max(values)
        pad = max(abs(low) * 0.05, 1.0) if high == low else 0.0
        return low - pad, high + pad

    return around(xs), around(ys)
