"""A study answered from a design table (table=...) through the real search path, and the sampler comparison on a
slice of a table (search/compare.py)."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState

from objectives.design import DesignPoint
from objectives.table import DesignTable, grid_points
from search.compare import Exhaustive, overrides, run_one, summarize
from search.config import compose
from search.convergence import by_evaluation, history, hypervolume, reference_point
from search.design_table import load_design_table
from search.profiles import ConfigError
from search.record import TrialRecord
from search.run import run
from search.settings import difference, legacy_repr, search_settings, settings_record
from search.workbench import final_training, measuring
from tests.helpers import fake_result, fake_table

SLICE = ["study=quick", "study.th=0.1", "study.paper_ratios=[0.5,0.25]", "space.shared_layer_keep=true",
         "space.image_codecs=[raw]",  # the table holds no coded images (study=table_benchmark's choice too)
         "space.layer_keep={low:0.25,high:1.0,log:true}", "progress=false"]


@pytest.fixture()
def slice_table(tmp_path):
    rc = compose(SLICE)
    path = tmp_path / "table.csv"
    cut = fake_table(path, rc, partitions=[0, 1, 2, 3, 6])
    return path, cut


def test_a_table_study_runs_through_the_search_and_reproduces_the_table(tmp_path, slice_table):
    path, cut = slice_table
    rc = compose([*SLICE, f"table={path}", f"studies_dir={tmp_path}", "study.n_trials=12",
                  "space.partitions=[0,1,2,3,6]"])
    res = run(rc)
    assert res.primaries == 12 and res.baseline_map50 == 0.9
    done = [t for t in res.study.get_trials() if t.state == TrialState.COMPLETE]
    prim = [t for t in done if TrialRecord.from_trial(t).is_primary]
    assert len(prim) == 12
    design = DesignTable.load(path, cut)
    for t in done:  # every number a trial holds is the table's row of its (snapped) grid point
        r = TrialRecord.from_trial(t)
        want = fake_result(design.snap(DesignPoint(*[t.params.get(k, d) for k, d in
                                                     (("j", 0), ("bits", 8), ("keep_cut", 1.0))],
                                                   tuple((c, t.params["keep_L"]) for c in cut[t.params["j"]]
                                                         .earlier_convs) if "keep_L" in t.params else ())),
                           cut, rc.data.size)
        assert r.accuracy_key == want.key
        assert r.mAP50 == pytest.approx(want.map50, abs=1e-12)
        assert r.payload_bytes == math.ceil(want.payload_mean_bytes[r.codec])  # quick's codec names = algorithms
    # 2 radios x 2 codecs: every model on each pair, once
    assert len(done) == 4 * len({TrialRecord.from_trial(t).accuracy_key for t in done})
    assert (tmp_path / "quick" / "report.html").read_text().count("Convergence: hypervolume") == 1


def test_a_table_made_with_other_settings_is_refused_in_one_line(tmp_path, slice_table):
    path, _ = slice_table
    with pytest.raises(ConfigError, match=r"table=.*measured with other data/model/train/eval settings"):
        load_design_table(compose([*SLICE, f"table={path}", "train.finetune.steps=7"]))
    with pytest.raises(ConfigError, match="file not found"):
        compose([*SLICE, f"table={tmp_path}/missing.csv"])
    with pytest.raises(ConfigError, match="keeps no weights"):
        compose([*SLICE, f"table={path}", "mode=finalize"])


def test_finetune_when_is_part_of_the_settings_only_where_it_skips(tmp_path):
    """``always`` (and the precheck keys it never reads) keeps the settings repr of studies and tables measured
    before the option existed; ``needed`` is a different measurement, so a table study refuses it; measuring()
    gives the needed policy the study's requirement, and the final training always trains."""
    always, needed = compose([*SLICE, "train.finetune_when=always"]), compose(SLICE)
    assert needed.train.finetune_when == "needed"  # the default; the paper's protocol and the table fine-tune all
    assert compose(["study=paper"]).train.finetune_when == compose(["study=table_benchmark"]).train.finetune_when \
        == "always"
    a, n = settings_record(always, "m"), settings_record(needed, "m")
    assert a["train"]["finetune_when"] == "always" and n["train"]["finetune_when"] == "needed"
    assert "precheck_images" not in a["eval"] and n["eval"]["precheck_images"] == needed.eval.precheck_images
    assert "final" not in a["train"] and "final" not in n["train"]  # the final budget never changes search results
    assert search_settings(always, "m") == search_settings(
        compose([*SLICE, "train.finetune_when=always", "eval.precheck_images=7", "train.final.steps=9"]), "m")
    assert difference(search_settings(needed, "m"), compose([*SLICE, "eval.precheck_images=7"]), "m") == \
        f"eval.precheck_images: {needed.eval.precheck_images!r} vs 7"
    # a study or table from before the record existed (a repr) is recognized through the legacy form
    assert difference(legacy_repr(always, "m"), always, "m") is None
    assert difference(legacy_repr(always, "m"), needed, "m").startswith("settings recorded before")
    s, pricing = measuring(needed, 0.9, needed.train)
    assert s.skips_finetune and s.required_map50 == pytest.approx(0.9 - needed.study.th) and pricing.th == needed.study.th
    final = final_training(needed.train)
    assert final.finetune == needed.train.final and final.finetune_when == "always"
    assert not measuring(needed, 0.9, final)[0].skips_finetune
    path = tmp_path / "table.csv"
    fake_table(path, always)
    assert load_design_table(compose([*SLICE, "train.finetune_when=always", f"table={path}"])).results
    with pytest.raises(ConfigError, match="measured with other data/model/train/eval settings"):
        load_design_table(compose([*SLICE, f"table={path}"]))


def test_points_outside_the_table_fail_with_the_reason_and_the_study_goes_on(tmp_path, slice_table):
    path, _ = slice_table  # per-conv step-2 ratios (the default space) mostly snap to different levels at j=3
    rc = compose([*SLICE[:2], "progress=false", f"table={path}", f"studies_dir={tmp_path}", "study.n_trials=15",
                  "space.partitions=[3]", "space.layer_keep={low:0.25,high:1.0,log:false}"])
    res = run(rc)
    failed = [TrialRecord.from_trial(t) for t in res.study.get_trials() if t.state == TrialState.FAIL]
    assert failed and all("snap to different levels" in r.fail_reason for r in failed)
    assert res.primaries == 15  # a refused point counts as an evaluation (it was proposed and answered)


def test_hypervolume_history_is_monotone_and_ends_at_the_whole_studys(tmp_path, slice_table):
    path, _ = slice_table
    rc = compose([*SLICE, f"table={path}", "study.n_trials=15", "space.partitions=[0,1,2,3,6]"])
    design = load_design_table(rc)
    settings, pricing = measuring(rc, design.baseline_map50, rc.train)
    trials = run_one(rc, design, pricing, settings.codecs)
    ref = reference_point(trials)
    hv = history(trials, ref)
    assert len(hv) == len(by_evaluation(trials)) == 15
    assert all(b >= a for a, b in zip(hv, hv[1:], strict=False)) and hv[-1] > 0
    assert hv[-1] == pytest.approx(hypervolume(trials, ref))


def test_sampler_comparison_on_a_slice_never_beats_the_exhaustive_front(tmp_path, slice_table):
    path, cut = slice_table
    base = [*SLICE, f"table={path}", "space.partitions=[0,1,2,3,6]"]
    rc = compose(base)
    design = load_design_table(rc)
    settings, pricing = measuring(rc, design.baseline_map50, rc.train)
    ex = Exhaustive.of(rc, design, pricing)
    assert 0 < len(ex.front) < len(ex.trials) and ex.hv > 0
    rows = []
    for name in ("random", "tpe_cl", "paper"):
        for seed in range(2):
            trials = run_one(compose([*base, *overrides(name, seed, 20)]), design, pricing, settings.codecs)
            rows += [{"sampler": name, "seed": seed, **r} for r in ex.score(trials, [5, 20])]
    assert all(0 <= r["hv"] <= 1 + 1e-12 for r in rows)
    assert all(r["front_found"] <= r["front_size"] for r in rows)
    # a study that evaluates every grid point reaches exactly the exhaustive hypervolume and finds the whole front
    grid = grid_points(cut, partitions=[0, 1, 2, 3, 6])
    every = compose([*base, *overrides("random", 0, len(grid)), "study.enqueue_baselines=false"])
    study_trials = _enqueued(every, design, pricing, settings.codecs, grid)
    full = ex.score(study_trials, [len(grid)])[0]
    assert full["hv"] == pytest.approx(1.0, abs=1e-12) and full["front_found"] == full["front_size"]
    import pandas as pd

    summary = summarize(pd.DataFrame(rows))
    assert set(summary.sampler) == {"random", "tpe_cl", "paper"}
    assert summary[summary.sampler == "random"].beats_random.isna().all()


def _enqueued(rc, design, pricing, codecs, points):
    from search import drivers
    from search.objective import Objective
    from search.space import params_of

    study = optuna.create_study(directions=["minimize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    objective = Objective(study, rc.space, design.cut, pricing, design.lookup, codecs)
    for p in points:
        study.enqueue_trial(params_of(p, rc.space, design.cut))
    drivers.sampler_loop(rc, study, objective)
    return study.get_trials(deepcopy=False)


SHIPPED = "benchmarks/tables/energy_latency.csv"


def test_the_shipped_table_is_complete_and_answers_todays_default_study(tmp_path):
    """The committed design table covers the whole grid and was measured with today's default data/model/train/eval
    settings (change one of them and this fails: rebuild the table with benchmarks/build_table.py)."""
    rc = compose(["study=table_benchmark", f"table={SHIPPED}", f"studies_dir={tmp_path}", "study.n_trials=30",
                  "progress=false"])
    design = load_design_table(rc)
    assert len(design.results) == len(grid_points(design.cut)) == 262
    prov = design.provenance
    assert prov["rows"] == 262 and prov["build_seconds"] > 0 and prov["commits"] and prov["machine"]
    assert design.baseline_map50 > 0.9
    import pathlib

    assert pathlib.Path(SHIPPED).stat().st_size < 1_000_000
    res = run(rc)  # a 30-evaluation study in seconds, every number from the table
    done = [TrialRecord.from_trial(t) for t in res.study.get_trials() if t.state == TrialState.COMPLETE]
    assert res.primaries == 30 and done
    for r in done:
        assert r.mAP50 == design.results[r.accuracy_key].map50
