"""Live metric charts drawn with plotext, at most one point per column of their width."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import RenderResult
from textual_plotext import PlotextPlot

Series = tuple[str, Sequence[float], Sequence[float]]  # label, x, y

# Series colours by position, fixed so that a series keeps its colour through every redraw and in
# every chart (train is always the first, validation the second). The values are the first ten of
# Sasha Trubetskoy's "List of 20 Simple, Distinct Colors" (2017), readable on dark and light themes.
PALETTE = [
    (0, 130, 200), (60, 180, 75), (245, 130, 48), (230, 25, 75), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40),
]


def downsample(xs: Sequence[float], ys: Sequence[float], width: int) -> tuple[list[float], list[float]]:
    """Keep at most ``width`` points: the mean of each bucket, always ending on the newest point."""
    n = len(xs)
    if n <= width or width <= 0:
        return list(xs), list(ys)
    out_x, out_y = [], []
    for i in range(width):
        start, end = i * n // width, (i + 1) * n // width
        if end > start:
            out_x.append(xs[end - 1])
            out_y.append(sum(ys[start:end]) / (end - start))
    return out_x, out_y


def charted() -> list[tuple[str, str, str]]:
    """What a per-epoch chart can show, in order: (key, its title, the epoch column): every
    registered metric but the loss (charted on its own) and the learning rate."""
    from db.vocabulary import METRICS

    return [(m.key, m.label, m.epoch_column) for m in METRICS if m.key != "loss"] + [("lr", "learning rate", "lr")]


MARKERS = ("braille", "dot", "x", "+", "o", "*")  # one per series where runs are overlaid
GLYPHS = {"braille": "⢕", "dot": "•", "x": "x", "+": "+", "o": "o", "*": "*"}  # how plotext draws each
MAX_TICKS = 8


def integer_ticks(xs: Sequence[float], most: int = MAX_TICKS) -> list[int]:
    """Whole-number ticks spanning ``xs`` (epochs, steps), at most ``most`` of them."""
    if not xs:
        return []
    low, high = int(min(xs)), int(max(xs))
    if high <= low:
        return [low]
    step = max(1, -(-(high - low) // (most - 1)))
    return list(range(low, high + 1, step))


class MetricChart(PlotextPlot):
    """A titled line chart. ``replot`` takes whole series; the points are fitted to the width
    the chart has when it is drawn, so a chart filled before its first layout, or resized, is
    still one point per column."""

    def __init__(self, title: str, *, y_label: str = "", x_label: str = "epoch", markers: bool = False, **kwargs):
        """``markers``: each series its own marker as well as its own colour (runs overlaid in
        Compare stay apart in 256 colours and for colour-blind eyes)."""
        super().__init__(**kwargs)
        self.title, self.y_label, self.x_label = title, y_label, x_label
        self.markers = markers
        self._series: list[Series] | None = None  # None: not read yet
        self._plotted_width: int | None = None
        self._plotted_height: int | None = None

    def replot(self, series: list[Series], *, title: str | None = None) -> None:
        if title is not None:
            self.title = title
        self._series = series
        self._plotted_width = None
        self.refresh()

    def render(self) -> RenderResult:
        if self._series is None:
            return Text(f"{self.title}: reading…", style="dim")  # no plot until there is data to plot
        if not any(xs for _, xs, _ in self._series):  # an empty frame says nothing: say why it is empty
            return Text(f"{self.title}: no {self.x_label}s recorded yet; the chart starts with the first one", style="dim")
        width = max(10, self.size.width - 10)  # the plot area, less the y axis' labels
        if (width, self.size.height) != (self._plotted_width, self._plotted_height):
            self._draw_series(width)
        return super().render()

    def _draw_series(self, width: int) -> None:
        self._plotted_width, self._plotted_height = width, self.size.height
        plt = self.plt
        # clear_data only: clear_figure rebuilds plotext's figure, which costs ~10 ms a time.
        plt.clear_data()
        plotted = [(index, series) for index, series in enumerate(self._series) if series[1]]
        # plotext draws the legend inside the plot, a line a series: where that would cover more than
        # half of it (a study's trials at 80x24), the legend goes in the title instead, marker by marker.
        in_title = self.markers and len(plotted) > max(1, (self.size.height - 5) // 2)
        title = self.title
        if in_title:
            title += " · " + "  ".join(f"{GLYPHS[MARKERS[index % len(MARKERS)]]} {label}" for index, (label, _, _) in plotted)
        plt.title(title)
        plt.xlabel(self.x_label)
        drawn = False
        for index, (label, xs, ys) in plotted:
            x, y = downsample(xs, ys, width)
            marker = MARKERS[index % len(MARKERS)] if self.markers else "braille"
            plt.plot(x, y, label=None if in_title else label, marker=marker, color=PALETTE[index % len(PALETTE)])
            drawn = True
        ticks = integer_ticks([x for _, xs, _ in self._series for x in xs])
        if ticks:
            plt.xticks(ticks, [str(t) for t in ticks])  # epochs and steps are whole numbers
        if not drawn:
            plt.title(f"{self.title} (no data yet)")
