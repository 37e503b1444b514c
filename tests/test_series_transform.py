import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from statefulrnn.series.transform import Transform, frame, transforms_from_json, transforms_to_json

specs = st.fixed_dictionaries(
    {
        "seasonal_diff": st.sampled_from([0, 2, 3, 7]),
        "diff": st.integers(0, 2),
        "scale": st.sampled_from(["minmax", "standard", "none"]),
    }
)


@st.composite
def cases(draw):
    spec = draw(specs)
    offset = spec["seasonal_diff"] + spec["diff"]
    n = draw(st.integers(offset + 2, offset + 60))
    y = draw(arrays(np.float64, n, elements=st.integers(-(10**6), 10**6).map(lambda i: i / 1000)))
    n_train = draw(st.integers(offset + 1, n))
    origin = draw(st.integers(offset, n - 1))
    horizon = draw(st.integers(1, n - origin))
    return spec, y, n_train, origin, horizon


@settings(max_examples=300, deadline=None)
@given(cases())
def test_inverse_forecast_of_the_true_future_is_the_true_future(case):
    spec, y, n_train, origin, horizon = case
    t = Transform(**spec).fit(y[:n_train])
    z = t.transform(y)
    assert z.shape == (len(y) - t.offset,)
    future = z[origin - t.offset : origin - t.offset + horizon]
    tol = 1e-9 * max(1.0, np.abs(y).max())
    np.testing.assert_allclose(t.inverse_forecast(future, y[:origin]), y[origin : origin + horizon], rtol=0, atol=tol)
    np.testing.assert_allclose(t.inverse(z, y[: t.offset]), y, rtol=0, atol=tol)
    both = t.inverse_forecast(np.stack([future, future]), y[:origin])
    assert both.shape == (2, horizon)
    np.testing.assert_allclose(both[1], y[origin : origin + horizon], rtol=0, atol=tol)
    again = Transform.from_json(t.to_json())
    np.testing.assert_array_equal(again.transform(y), z)


def test_inverse_at_undoes_every_origin_with_its_own_history():
    rng = np.random.default_rng(0)
    y = np.cumsum(rng.normal(size=80)) + 5 * np.sin(np.arange(80) * 2 * np.pi / 12)
    t = Transform(seasonal_diff=12, diff=1).fit(y[:60])
    z = t.transform(y)
    origins = np.arange(t.offset, 75)
    forecasts = np.stack([z[o - t.offset : o - t.offset + 5] for o in origins])
    truth = np.stack([y[o : o + 5] for o in origins])
    np.testing.assert_allclose(t.inverse_at(forecasts, y, origins), truth, atol=1e-9)
    with pytest.raises(ValueError, match="each origin needs 13"):
        t.inverse_at(forecasts[:1], y, [5])


def test_seasonal_forecasts_feed_later_ones_by_hand():
    t = Transform(seasonal_diff=2, scale="none").fit([0.0, 1.0, 5.0])
    # the next values are y[T-2] + 10, y[T-1] + 20, then the first forecast + 30
    assert t.inverse_forecast([10.0, 20.0, 30.0], [1.0, 2.0, 3.0, 4.0]).tolist() == [13, 24, 43]
    d = Transform(diff=1, scale="none").fit([0.0, 1.0])
    assert d.inverse_forecast([1.0, 1.0, -2.0], [7.0]).tolist() == [8, 9, 7]


def test_scaling_uses_the_training_part_only():
    y = np.array([2.0, 4.0, 6.0, 10.0, 100.0])
    t = Transform(scale="minmax").fit(y[:4])
    z = t.transform(y)
    assert z[:4].tolist() == [-1, -0.5, 0, 1] and z[4] == 23.5
    s = Transform(scale="standard").fit(y[:4]).transform(y[:4])
    assert abs(s.mean()) < 1e-12 and abs(s.std() - 1) < 1e-12
    d = Transform(diff=1, scale="minmax").fit(y[:4])
    assert d.offset == 1 and d.transform(y[:4]).tolist() == [-1, -1, 1]
    flat = Transform(scale="minmax").fit([3.0, 3.0])
    assert flat.transform([3.0, 4.0]).tolist() == [0, 1]


def test_features_are_scaled_and_aligned_not_differenced():
    y = np.arange(10.0)
    x = np.column_stack([np.arange(10.0) * 2, np.full(10, 5.0)])
    t = Transform(diff=1).fit(y[:6], x[:6])
    fx = t.transform_features(x)
    assert fx.shape == (9, 2) and fx[0, 0] == (2 - 5) / 5 and fx[4, 0] == 1 and (fx[:, 1] == 0).all()
    with pytest.raises(ValueError, match="fitted on 2"):
        t.transform_features(x[:, :1])
    with pytest.raises(ValueError, match="without features"):
        Transform().fit(y).transform_features(x)


def test_errors():
    with pytest.raises(ValueError, match="not fitted"):
        Transform().transform([1.0, 2.0])
    with pytest.raises(ValueError, match="needs more than 13"):
        Transform(seasonal_diff=12, diff=1).fit(np.arange(13.0))
    with pytest.raises(ValueError, match="NaN"):
        Transform().fit([1.0, np.nan])
    with pytest.raises(ValueError, match="scale="):
        Transform(scale="log")
    with pytest.raises(ValueError, match="diff must be"):
        Transform(diff=3)
    t = Transform(seasonal_diff=4).fit(np.arange(10.0))
    with pytest.raises(ValueError, match="history has 2 values; .* needs at least 4"):
        t.inverse_forecast([0.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="head must hold the first 4"):
        t.inverse([0.0], [1.0])


def test_json_round_trip_and_bad_json():
    y = np.sin(np.arange(40.0))
    fitted = {"a": Transform(seasonal_diff=4, diff=1).fit(y), "b": Transform(scale="standard").fit(y, y[:, None])}
    back = transforms_from_json(transforms_to_json(fitted))
    assert back.keys() == fitted.keys()
    for k in fitted:
        assert back[k].to_dict() == fitted[k].to_dict()
        np.testing.assert_array_equal(back[k].transform(y), fitted[k].transform(y))
    good = fitted["a"].to_dict()
    with pytest.raises(ValueError, match="not a statefulrnn transform"):
        Transform.from_dict({**good, "kind": "x"})
    with pytest.raises(ValueError, match="malformed"):
        Transform.from_dict({k: v for k, v in good.items() if k != "center"})
    with pytest.raises(ValueError, match="version"):
        Transform.from_json(json.dumps({**good, "version": 99}))
    with pytest.raises(ValueError, match="does not parse"):
        Transform.from_json("{")
    with pytest.raises(ValueError, match="transforms file"):
        transforms_from_json("[]")


def test_frame_aligns_inputs_and_next_h_targets():
    y = np.arange(6.0) / 10
    x = np.arange(12.0).reshape(6, 2)
    inputs, targets = frame(y, 3, x)
    assert inputs.shape == (6, 3) and targets.shape == (6, 3)
    np.testing.assert_array_equal(inputs[:, 0], y)
    np.testing.assert_array_equal(inputs[:, 1:], x)
    for t in range(6):
        for h in range(3):
            expected = y[t + 1 + h] if t + 1 + h < 6 else np.nan
            np.testing.assert_equal(targets[t, h], expected)
    inputs, targets = frame(y, 1)
    assert inputs.shape == (6, 1) and targets[:, 0].tolist()[:5] == y[1:].tolist() and np.isnan(targets[5, 0])
    with pytest.raises(ValueError, match="horizon"):
        frame(y, 0)
    with pytest.raises(ValueError, match=r"features must be \(6, F\)"):
        frame(y, 2, x[:5])
