"""The design table: its grid, its CSV round trip and the lookup's snapping rules (objectives/table.py)."""

from __future__ import annotations

import json

import pytest

from models import cut_points
from objectives.design import DesignPoint
from objectives.table import DesignTable, OutsideTable, grid_counts, grid_points, read_csv
from search.workbench import model_config
from tests.helpers import conf, fake_result, fake_table


@pytest.fixture(scope="module")
def default_cut():
    return cut_points(model_config(conf(), 1))


@pytest.fixture()
def table(tmp_path, default_cut):
    rc = conf()
    fake_table(tmp_path / "t.csv", rc)
    return DesignTable.load(tmp_path / "t.csv", default_cut)


def test_grid_counts_are_log_spaced_from_one_channel_to_all():
    assert grid_counts(16) == (1, 2, 4, 8, 16)
    assert grid_counts(256) == (1, 4, 16, 64, 256)
    assert grid_counts(32) == (1, 2, 6, 13, 32)
    assert grid_counts(2) == (1, 2)  # fewer distinct counts than asked
    with pytest.raises(ValueError, match="channels >= 1"):
        grid_counts(0)


def test_the_default_grid_covers_what_issue_16_names(default_cut):
    pts = grid_points(default_cut)
    assert len(pts) == 262  # j=1: 4 bits x 5 counts; j=2..5: 4 x 5 x 3 levels; j=0; j=6
    keys = {p.accuracy_key(default_cut) for p in pts}
    assert len(keys) == len(pts)  # every grid point is its own model
    for j in range(1, 6):
        at = [p for p in pts if p.j == j]
        assert {p.bits for p in at} == {1, 2, 4, 8}
        counts = {default_cut.kept(default_cut[j].conv, p.cut_keep) for p in at}
        assert min(counts) == 1 and max(counts) == default_cut.conv_channels[default_cut[j].conv]
        assert len(counts) >= 5
        levels = {r for p in at for _, r in p.layer_keep}
        assert levels == ({1.0, 0.5, 0.25} if j >= 2 else set())
        assert all(len({r for _, r in p.layer_keep}) <= 1 for p in at)  # one shared step-2 level
    assert {p.j for p in pts if not default_cut[p.j].is_split} == {0, 6}


def test_csv_round_trip_gives_back_every_field(tmp_path, default_cut):
    rc = conf()
    fake_table(tmp_path / "t.csv", rc)
    prov, rows = read_csv(tmp_path / "t.csv")
    assert prov["num_classes"] == 1 and len(rows) == 262
    t = DesignTable.load(tmp_path / "t.csv", default_cut)
    for p in grid_points(default_cut)[::17]:
        got, want = t.lookup(p).as_attrs(), fake_result(p, default_cut, rc.data.size).as_attrs()
        assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)  # NaN == NaN here
    assert t.snapped == 0 and t.outside == 0
    assert t.baseline_map50 == 0.9
    assert (tmp_path / "t.csv").stat().st_size < 1_000_000


def test_lookup_snaps_channels_on_a_log_scale_ties_to_the_larger(table, default_cut):
    # j=5 cuts conv 8 (256 channels): grid counts 1, 4, 16, 64, 256
    full = tuple((c, 1.0) for c in default_cut[5].earlier_convs)
    got = table.lookup(DesignPoint(5, 4, 40 / 256, full))
    assert got.cut_shape[0] == 64  # log(40) is nearer log(64) than log(16)
    got = table.lookup(DesignPoint(5, 4, 2 / 256, full))
    assert got.cut_shape[0] == 4  # 2 lies halfway between 1 and 4 on a log scale: the larger
    assert table.snapped == 2
    exact = table.lookup(DesignPoint(5, 4, 16 / 256, full))
    assert exact.cut_shape[0] == 16 and table.snapped == 2


def test_lookup_snaps_a_shared_step2_ratio_to_the_nearest_level(table, default_cut):
    earlier = default_cut[3].earlier_convs
    got = table.lookup(DesignPoint(3, 2, 1.0, tuple((c, 0.3) for c in earlier)))
    want = DesignPoint(3, 2, 1.0, tuple((c, 0.25) for c in earlier)).accuracy_key(default_cut)
    assert got.key == want


@pytest.mark.parametrize("point,match", [
    (DesignPoint(3, 2, 1.0, ((0, 1.0), (2, 0.25))), "snap to different levels"),
    (DesignPoint(3, 2, 1.0, ((0, 0.1), (2, 0.1))), "outside the table's levels"),
    (DesignPoint(2, 3, 1.0, ((0, 1.0),)), "bits=3 at j=2 is not in the table"),
    (DesignPoint(2, 2, 0.5, ((0, 1.0),), criterion="taylor"), "criterion='taylor'"),
])
def test_a_point_outside_the_grid_is_refused_not_invented(table, point, match):
    with pytest.raises(OutsideTable, match=match):
        table.lookup(point)
    assert table.outside == 1


def test_an_incomplete_table_says_which_row_is_missing(tmp_path, default_cut):
    fake_table(tmp_path / "t.csv", conf(), partitions=[0, 1, 6])
    t = DesignTable.load(tmp_path / "t.csv", default_cut)
    assert t.lookup(DesignPoint(1, 8, 1.0)).j == 1
    with pytest.raises(OutsideTable, match=r"j=2 is not in the table \(it has j in \[0, 1, 6\]\)"):
        t.lookup(DesignPoint(2, 8, 1.0, ((0, 1.0),)))


def test_coded_image_rows_round_trip_and_snap_their_quality(tmp_path, default_cut):
    from objectives.table import GRID_QUALITIES

    rc = conf()
    fake_table(tmp_path / "t.csv", rc, image_codecs=("jpeg",))
    _, rows = read_csv(tmp_path / "t.csv")
    assert len(rows) == 262 + len(GRID_QUALITIES)  # the other rows are unchanged by the coded images
    t = DesignTable.load(tmp_path / "t.csv", default_cut)
    exact = t.lookup(DesignPoint(0, image_codec="jpeg", quality=50))
    assert exact.key == "j=0;img=jpeg;q=50" and exact.image_codec == "jpeg" and exact.quality == 50
    want = fake_result(DesignPoint(0, image_codec="jpeg", quality=50), default_cut, rc.data.size).as_attrs()
    assert json.dumps(exact.as_attrs(), sort_keys=True) == json.dumps(want, sort_keys=True)  # NaN == NaN here
    assert t.lookup(DesignPoint(0, image_codec="jpeg", quality=45)).quality == 50  # nearest grid quality, tie up
    assert t.lookup(DesignPoint(0, image_codec="jpeg", quality=90)).quality == 95 and t.snapped == 2
    assert t.lookup(DesignPoint(0)).key == "j=0" and t.baseline_map50 == 0.9  # the raw image row is still there
    with pytest.raises(OutsideTable, match="the table holds no webp rows"):
        t.lookup(DesignPoint(0, image_codec="webp", quality=50))
    fake_table(tmp_path / "o.csv", rc)
    old = DesignTable.load(tmp_path / "o.csv", default_cut)
    with pytest.raises(OutsideTable, match="no jpeg rows"):
        old.lookup(DesignPoint(0, image_codec="jpeg", quality=50))
