import gzip

import numpy as np
import pandas as pd
import pytest

from statefulrnn.series.data import Series, SeriesSet, infer_freq
from statefulrnn.series.read import read_series, series_from_frame


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def lines(header, rows):
    return header + "\n" + "\n".join(rows) + "\n"


def daily(n, start="2020-01-01", value=lambda i: float(i)):
    return [f"{d.date()},{value(i)}" for i, d in enumerate(pd.date_range(start, periods=n, freq="D"))]


# ---------------------------------------------------------------- layouts


def test_long_format_with_features(tmp_path):
    rows = [f"{sid},2020-01-0{d},{d * k},{d + 0.5}" for sid, k in (("b", 10), ("a", 1)) for d in range(1, 6)]
    s = read_series(write(tmp_path, "m.csv", lines("unique_id,ds,y,temp", rows)), features=["temp"])
    assert isinstance(s, SeriesSet) and s.ids == ["b", "a"]
    b = s["b"]
    assert b.values.dtype == np.float64 and b.values.tolist() == [10, 20, 30, 40, 50]
    assert b.features.shape == (5, 1) and b.features[:, 0].tolist() == [1.5, 2.5, 3.5, 4.5, 5.5]
    assert b.feature_names == ("temp",) and s.feature_names == ("temp",) and s.target == "y"
    assert np.issubdtype(b.timestamps.dtype, np.datetime64) and b.freq == "D" and s.freq == "D"
    assert s[1] is s["a"] and len(s) == 2 and not b.filled.any()
    with pytest.raises(KeyError, match="no series 'zz'"):
        s["zz"]


def test_features_auto_takes_numeric_leftovers(tmp_path):
    rows = [f"2020-01-0{d},{d},{d * 2},x{d}" for d in range(1, 5)]
    s = read_series(write(tmp_path, "f.csv", lines("timestamp,value,load,label", rows)), features="auto")
    assert s.feature_names == ("load",) and s[0].features[:, 0].tolist() == [2, 4, 6, 8]


def test_id_timestamp_value_layout(tmp_path):
    rows = [f"{sid},2000-0{m}-01,{m}" for sid in ("X", "Y") for m in range(1, 7)]
    s = read_series(write(tmp_path, "s.csv", lines("id,timestamp,value", rows)))
    assert s.ids == ["X", "Y"] and [len(x) for x in s] == [6, 6] and s.freq == "MS" and s.feature_names == ()


def test_single_series_monthly_named_after_file(tmp_path):
    path = write(tmp_path, "airline.csv", lines("timestamp,value", ["1949-01,112", "1949-02,118", "1949-03,132"]))
    s = read_series(path)
    assert s.ids == ["airline"] and s[0].freq == "MS" and s[0].features is None
    assert str(s[0].timestamps[0])[:10] == "1949-01-01" and s[0].values.tolist() == [112, 118, 132]


def test_explicit_columns_override_detection(tmp_path):
    rows = [f"s{i % 2},2021-01-0{i // 2 + 1} 00:00,{i},{100 + i}" for i in range(8)]
    path = write(tmp_path, "o.csv", lines("station,when,value,flow", rows))
    s = read_series(path, id_col="station", time_col="when", target="flow")
    assert s.ids == ["s0", "s1"] and s["s1"].values.tolist() == [101, 103, 105, 107] and s.target == "flow"


def test_single_leftover_column_is_the_target(tmp_path):
    s = read_series(write(tmp_path, "p.csv", lines("date,price", daily(4))))
    assert s.target == "price" and s[0].values.tolist() == [0, 1, 2, 3]


def test_compressed_csv(tmp_path):
    path = tmp_path / "z.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(lines("timestamp,value", daily(3)))
    assert read_series(path).ids == ["z"]


def test_parquet_round_trip(tmp_path):
    pytest.importorskip("pyarrow")
    df = pd.DataFrame(
        {
            "unique_id": ["a"] * 4 + ["b"] * 4,
            "ds": list(pd.date_range("2020-01-01", periods=4, freq="h")) * 2,
            "y": np.arange(8, dtype=float),
            "x": np.arange(8, dtype=np.int64),
        }
    )
    df.to_parquet(tmp_path / "d.parquet")
    s = read_series(tmp_path / "d.parquet", features="auto")
    assert s.ids == ["a", "b"] and s.freq == "h" and s["b"].values.tolist() == [4, 5, 6, 7]
    assert s["b"].features[:, 0].tolist() == [4, 5, 6, 7]
    back = series_from_frame(s.to_frame(), features=["x"])
    assert np.array_equal(back["a"].timestamps, s["a"].timestamps) and back.feature_names == ("x",)


def test_timezone_offsets_become_utc(tmp_path):
    rows = ["2010-03-14 00:00-08:00,1", "2010-03-14 01:00-08:00,2", "2010-03-14 03:00-07:00,3"]
    s = read_series(write(tmp_path, "tz.csv", lines("timestamp,value", rows)))
    assert s[0].freq == "h" and str(s[0].timestamps[0]).startswith("2010-03-14T08:00")


# ---------------------------------------------------------------- errors, one clear line each


def error(tmp_path, text, name="e.csv", **kw):
    with pytest.raises(ValueError) as info:
        read_series(write(tmp_path, name, text), **kw)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_series(tmp_path / "nope.csv")


def test_unsupported_and_unreadable_files(tmp_path):
    assert "unsupported format '.xlsx'" in error(tmp_path, "x", name="e.xlsx")
    assert "empty" in error(tmp_path, "")
    assert "no data rows" in error(tmp_path, "timestamp,value\n")
    assert "cannot read as CSV" in error(tmp_path, "timestamp,value\n2020-01-01,1\n2020-01-02,1,2,3\n")
    (tmp_path / "bin.csv").write_bytes(b"timestamp,value\n\xff\xfe,1\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_series(tmp_path / "bin.csv")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="bad.parquet: (cannot read as Parquet|reading Parquet needs pyarrow)"):
        read_series(tmp_path / "bad.parquet")


def test_missing_columns_lists_what_was_found(tmp_path):
    text = lines("when,price,volume", ["2020-01-01,1,2"])
    message = error(tmp_path, text)
    assert "no time column" in message and "columns found: when, price, volume" in message and "time_col=" in message
    message = error(tmp_path, text, time_col="when", target="close")
    assert "no target column 'close'" in message and "columns found: when, price, volume" in message
    message = error(tmp_path, lines("timestamp,a,b", ["2020-01-01,1,2"]))
    assert "no target column" in message and "--target" in message
    assert "feature column 'zz'" in error(tmp_path, lines("timestamp,value", daily(3)), features=["zz"])


def test_gap_names_series_timestamp_and_rows(tmp_path):
    rows = [f"a,{r}" for r in daily(4)] + [f"b,{r}" for r in daily(5)]
    del rows[6]  # b loses 2020-01-03
    message = error(tmp_path, lines("id,timestamp,value", rows))
    assert "series 'b'" in message and "2020-01-03" in message and "between rows 6 and 7" in message
    assert "--fill ffill|interpolate" in message


def test_missing_value_names_row_and_timestamp(tmp_path):
    rows = daily(5)
    rows[2] = "2020-01-03,"
    message = error(tmp_path, lines("timestamp,value", rows), name="co2.csv")
    assert "series 'co2'" in message and "row 3 (2020-01-03)" in message and "missing value in target" in message


def test_missing_feature_value_names_the_feature(tmp_path):
    rows = [f"{r},1" for r in daily(4)]
    rows[1] = rows[1][:-1]
    message = error(tmp_path, lines("timestamp,value,load", rows), features=["load"])
    assert "row 2" in message and "feature 'load'" in message


def test_unsorted_and_duplicate_timestamps(tmp_path):
    rows = daily(4)
    rows[1], rows[2] = rows[2], rows[1]
    message = error(tmp_path, lines("timestamp,value", rows))
    assert "not sorted" in message and "row 3 (2020-01-02) comes after row 2 (2020-01-03)" in message
    assert "sort=True" in message
    s = read_series(write(tmp_path, "ok.csv", lines("timestamp,value", rows)), sort=True)
    assert s[0].values.tolist() == [0, 1, 2, 3]
    rows = daily(4)
    rows.insert(2, rows[1])
    message = error(tmp_path, lines("timestamp,value", rows), sort=True)
    assert "duplicate timestamp 2020-01-02 at rows 2 and 3" in message and "id_col=" in message


def test_non_numeric_and_non_finite_targets_show_the_value(tmp_path):
    rows = [f"s1,{r}" for r in daily(4)]
    rows[3] = "s1,2020-01-04,12,5"
    message = error(tmp_path, lines("id,timestamp,value", rows))
    assert "cannot read as CSV" in message
    rows[3] = "s1,2020-01-04,abc"
    message = error(tmp_path, lines("id,timestamp,value", rows))
    assert "series 's1'" in message and "row 4" in message and "'abc'" in message and "not a number" in message
    rows[3] = "s1,2020-01-04,inf"
    assert "not finite: 'inf'" in error(tmp_path, lines("id,timestamp,value", rows))


def test_bad_and_missing_timestamps(tmp_path):
    rows = daily(4)
    rows[2] = "2020-13-45,2"
    message = error(tmp_path, lines("timestamp,value", rows), name="t.csv")
    assert "series 't'" in message and "row 3" in message and "'2020-13-45'" in message and "ISO 8601" in message
    rows[2] = ",2"
    assert "row 3: missing timestamp" in error(tmp_path, lines("timestamp,value", rows))


def test_too_short_and_irregular_series(tmp_path):
    rows = [f"a,{r}" for r in daily(6)] + [f"b,{r}" for r in daily(3)]
    message = error(tmp_path, lines("id,timestamp,value", rows), min_length=5)
    assert "series 'b'" in message and "3 time steps" in message and "5 needed" in message
    irregular = ["2020-01-01,1", "2020-01-02,1", "2020-01-05,1", "2020-01-05 07:00,1"]
    message = error(tmp_path, lines("timestamp,value", irregular))
    assert "cannot infer a regular frequency" in message and "freq=None" in message
    assert len(read_series(write(tmp_path, "i.csv", lines("timestamp,value", irregular)), freq=None)[0]) == 4


def test_explicit_freq_checks_the_grid(tmp_path):
    path = write(tmp_path, "w.csv", lines("timestamp,value", ["2020-01-04,1", "2020-01-11,2", "2020-01-18,3"]))
    assert read_series(path)[0].freq == "W-SAT"
    with pytest.raises(ValueError, match=r"row 1 \(2020-01-04\) is not on the 'W-SUN' grid"):
        read_series(path, freq="W-SUN")
    with pytest.raises(ValueError, match="not a pandas offset alias"):
        read_series(path, freq="fortnightly")


# ---------------------------------------------------------------- filling


def test_fill_inserts_gaps_and_fills_missing_values(tmp_path):
    rows = ["2020-01-01,0", "2020-01-02,", "2020-01-03,4", "2020-01-05,8"]
    path = write(tmp_path, "g.csv", lines("timestamp,value", rows))
    f = read_series(path, fill="ffill")[0]
    assert len(f) == 5 and f.values.tolist() == [0, 0, 4, 4, 8]
    assert f.filled.tolist() == [False, True, False, True, False]
    assert str(f.timestamps[3])[:10] == "2020-01-04"
    i = read_series(path, fill="interpolate")[0]
    assert i.values.tolist() == [0, 2, 4, 6, 8]


def test_fill_edges_and_features(tmp_path):
    rows = ["2020-01-01,,1", "2020-01-02,3,", "2020-01-03,5,3"]
    path = write(tmp_path, "e.csv", lines("timestamp,value,x", rows))
    s = read_series(path, fill="interpolate", features=["x"])[0]
    assert s.values.tolist() == [3, 3, 5] and s.features[:, 0].tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="fill="):
        read_series(path, fill="zero")
    empty = write(tmp_path, "n.csv", lines("timestamp,value,x", ["2020-01-01,1,", "2020-01-02,2,"]))
    with pytest.raises(ValueError, match="column 'x' has no values at all"):
        read_series(empty, fill="ffill", features=["x"])


def test_business_days_with_holidays(tmp_path):
    days = pd.bdate_range("2020-01-01", periods=15)
    rows = [f"{d.date()},{i}" for i, d in enumerate(days) if i != 7]
    path = write(tmp_path, "msft.csv", lines("timestamp,value", rows))
    message = error(tmp_path, lines("timestamp,value", rows))
    assert "frequency 'B'" in message and "freq=None" in message
    assert len(read_series(path, fill="ffill")[0]) == 15 and len(read_series(path, freq=None)[0]) == 14


# ---------------------------------------------------------------- pieces


@pytest.mark.parametrize(
    "stamps, expected",
    [
        (pd.date_range("2020-01-01", periods=10, freq="30min").delete(4), "30min"),
        (pd.date_range("2020-01-04", periods=10, freq="W-SAT").delete(3), "W-SAT"),
        (pd.date_range("2020-01-01", periods=10, freq="MS").delete(5), "MS"),
        (pd.date_range("2020-01-31", periods=10, freq="ME").delete(5), "ME"),
        (pd.date_range("2020-04-01", periods=10, freq="QS-JAN").delete(5), "QS-JAN"),
        (pd.date_range("2000-03-01", periods=10, freq="YS-MAR").delete(5), "YS-MAR"),
        (pd.date_range("2020-01-01", periods=10, freq="2D").delete(5), "2D"),
        (pd.DatetimeIndex(["2020-01-01", "2020-01-02", "2020-01-04 12:00"]), None),
        (pd.DatetimeIndex(["2020-01-01"]), None),
    ],
)
def test_infer_freq_tolerates_gaps(stamps, expected):
    assert infer_freq(stamps) == expected


def test_series_checks_shapes_and_labels_the_future():
    s = Series("s", pd.date_range("2020-01-01", periods=3, freq="h"), [1, 2, 3], freq="h")
    assert str(s.future_timestamps(2)[-1]).startswith("2020-01-01T04:00") and not s.filled.any()
    with pytest.raises(ValueError, match="3 timestamps for 2 values"):
        Series("s", pd.date_range("2020-01-01", periods=3, freq="h"), [1, 2])
    with pytest.raises(ValueError, match="no frequency"):
        Series("s", pd.date_range("2020-01-01", periods=2), [1, 2]).future_timestamps(1)


def test_frame_with_a_datetime_index():
    df = pd.DataFrame({"sales": [1.0, 2.0, 3.0]}, index=pd.date_range("2020-01-01", periods=3, freq="D"))
    s = series_from_frame(df, name="shop")
    assert s.ids == ["shop"] and s.target == "sales" and s[0].freq == "D" and s[0].values.tolist() == [1, 2, 3]
