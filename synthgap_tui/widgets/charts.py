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

    def set_series(self, series: dict[str, tuple[list[float], list[float]]], hlines: dict[str, float] | None = None) -> None:
        self.series = series
        self.hlines = hlines or {}
        self.redraw()

    def on_resize(self) -> None:
        self.redraw()

    def redraw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(self.title)
        plt.xlabel(self.xlabel)
        plt.ylabel(self.ylabel)
        width = max(10, self.size.width - 12)
        drawn = False
        for name, (xs, ys) in self.series.items():
            # Events may lack a field (a runner without top-5): plot what exists.
            pts = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None and math.isfinite(y)]
            if pts:
                dx, dy = downsample([p[0] for p in pts], [p[1] for p in pts], width)
                plt.plot(dx, dy, label=name[:24], marker="braille")
                drawn = True
        for name, y in self.hlines.items():
            plt.hline(y)
        if self.log_x and drawn:
            plt.xscale("log")
        if not drawn:
            plt.title(f"{self.title} (no data yet)")
        self.refresh()
