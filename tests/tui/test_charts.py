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
