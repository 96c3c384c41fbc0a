"""Chart downsampling: at most one point per column, each the mean of its bucket."""

from __future__ import annotations

from leuktui.widgets.charts import downsample


def test_downsample_keeps_short_series_and_buckets_long_ones_into_means():
    assert downsample([1, 2, 3], [0.5, 0.4, 0.3], 10) == ([1, 2, 3], [0.5, 0.4, 0.3])
    xs = list(range(1, 1001))
    ys = [float(x) for x in xs]
    out_x, out_y = downsample(xs, ys, 100)
    assert len(out_x) == len(out_y) == 100
    assert out_x[0] == 10 and out_y[0] == 5.5, "the first bucket: steps 1-10, their mean"
    assert out_x[-1] == 1000 and out_y[-1] == 995.5, "ends on the newest point"
    # An uneven split still covers every point exactly once: bucket sizes times means add up.
    out_x, out_y = downsample(xs[:997], ys[:997], 100)
    assert len(out_x) == 100 and out_x[-1] == 997
    sizes = [b - a for a, b in zip([0, *out_x], out_x, strict=False)]
    assert set(sizes) == {9, 10}
    assert sum(size * mean for size, mean in zip(sizes, out_y, strict=True)) == sum(ys[:997])


async def test_a_legend_that_would_cover_the_chart_goes_in_its_title():
    """Four trials in a chart 10 lines high: plotext's legend, a line a series inside the plot,
    would hide the curves; the title carries it instead, each label after its marker."""
    from textual.app import App

    from leuktui.widgets.charts import MetricChart

    series = [(f"#{n} completed", [1, 2, 3], [0.5 + 0.1 * n, 0.6, 0.7 - 0.05 * n]) for n in range(4)]

    class Charts(App):
        CSS = "#small { height: 10; } #tall { height: 30; }"

        def compose(self):
            yield MetricChart("each trial's value", id="small", markers=True)
            yield MetricChart("each trial's value", id="tall", markers=True)

    app = Charts()
    async with app.run_test(size=(120, 40)) as pilot:
        for chart in app.query(MetricChart):
            chart.replot(series)
        await pilot.pause(0.2)
        small, tall = (str(app.query_one(f"#{name}", MetricChart).render()).splitlines() for name in ("small", "tall"))
        title = next(line for line in small if "each trial's value" in line)
        assert "⢕ #0 completed  • #1 completed  x #2 completed  + #3 completed" in title, title
        assert sum("completed" in line for line in small) == 1, "the legend in the title only, not over the curves"
        assert sum("completed" in line for line in tall) == 4, "room for the legend in the plot: there it stays, a line a series"
