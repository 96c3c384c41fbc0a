"""Live metric charts drawn with plotext, at most one point per column of their width."""

from __future__ import annotations

from collections.abc import Sequence

from textual_plotext import PlotextPlot

Series = tuple[str, Sequence[float], Sequence[float]]  # label, x, y


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


class MetricChart(PlotextPlot):
    """A titled line chart; ``replot`` takes whole series and redraws once."""

    def __init__(self, title: str, *, y_label: str = "", x_label: str = "epoch", **kwargs):
        super().__init__(**kwargs)
        self.title, self.y_label, self.x_label = title, y_label, x_label
        self._series: list[Series] = []

    def on_mount(self) -> None:
        super().on_mount()
        self.replot(self._series)

    def replot(self, series: list[Series]) -> None:
        self._series = series
        plt = self.plt
        # clear_data only: clear_figure rebuilds plotext's figure, which costs ~10 ms a time.
        plt.clear_data()
        plt.title(self.title)
        plt.xlabel(self.x_label)
        width = max(10, self.size.width - 10)
        drawn = False
        for label, xs, ys in series:
            if not xs:
                continue
            x, y = downsample(xs, ys, width)
            plt.plot(x, y, label=label, marker="braille")
            drawn = True
        if not drawn:
            plt.title(f"{self.title} (no data yet)")
        self.refresh()
