"""mode=finalize: which models are re-trained, how their results are stored (beside the search study, which stays
untouched), resumability, the fidelity switch of the exports, the agreement statistics and the report's tables;
end to end on the quick study with a tiny final budget."""

from __future__ import annotations

import json
import math

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from objectives.objective import AccuracyResult
from search.config import compose
from search.export import export_all, study_frames
from search.finalize import agreement, candidates, final_name, finalize, load_final, open_final
from search.objective import Pricing, score
from search.profiles import load_profile
from search.record import FINAL, SIBLING, TrialRecord
from search.report_data import PAPER_TH, report_data
from search.space import distributions_of
from search.view import judged, latest_finals, pareto_front, study_view
from tests.helpers import accuracy_result
from tests.search.test_space_export import COLUMNS, SPACE, TABLE
from tests.search.test_study import cli, load

BASE = 0.90
TH = 0.05  # threshold 0.85
RADIOS, CODECS = ("ble5", "wifi"), ("none", "zlib")


def acc(j: int, keep: int, map50: float, payload: float = 2000.0, macs: int = 10**7) -> AccuracyResult:
    key = f"j={j};b=2;cut={keep}/64;L=[];crit=l1"
    return accuracy_result(
        key, j, map50, {"none": payload, "zlib": payload * 0.8}, node_macs=macs, edge_macs=10**8,
        cut_shape=[keep, 10, 10], feature_values=keep * 100, raw_bytes=int(payload),
        payload_max_bytes={"none": int(payload), "zlib": int(payload)}, entropy_bytes=payload / 2,
        weight_count=1000, peak_activation_values=1000, finetune_steps=40)


def pricing(th: float = TH) -> Pricing:
    return Pricing(load_profile("node", "cortex_m7"), load_profile("edge", "rtx3090"),
                   {r: load_profile("radio", r) for r in RADIOS}, {c: load_profile("codec", c) for c in CODECS},
                   th, BASE)


def add_model(study: optuna.Study, a: AccuracyResult, th: float = TH) -> int:
    """A primary trial (ble5/none) and its three siblings, priced like the real objective; returns the primary."""
    primary = None
    for radio in RADIOS:
        for codec in CODECS:
            params = {"j": a.j, "bits": 2, "keep_cut": a.cut_shape[0] / 64, "codec": codec, "radio": radio}
            kw = {} if primary is None else {"role": SIBLING, "parent": primary}
            s = score(a, radio, codec, pricing(th), **kw)
            t = study.add_trial(optuna.trial.create_trial(
                params=params, distributions=distributions_of(params, SPACE, TABLE), values=list(s.values),
                user_attrs=s.record.to_attrs(), constraints=s.constraints)) or study.trials[-1]
            primary = t.number if primary is None else primary
    return primary


# payload (and so energy) falls with the channels kept; mAP with them too
MODELS = {"big": acc(3, 64, 0.89, 20000), "mid": acc(3, 16, 0.86, 8000), "small": acc(3, 8, 0.84, 4000),
          "tiny": acc(3, 2, 0.82, 1000), "far": acc(3, 1, 0.70, 500)}


STORAGES: dict[int, optuna.storages.BaseStorage] = {}


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage the fixture created the study in (public API only: the study's own user attr names it)."""
    return STORAGES[study.user_attrs["test_storage"]]


@pytest.fixture
def study():
    storage = optuna.storages.InMemoryStorage()
    s = optuna.create_study(study_name="s", directions=["minimize", "minimize"], storage=storage)
    s.set_user_attr("test_storage", id(storage))  # the tests reach the storage through STORAGES, not s._storage
    STORAGES[id(storage)] = storage
    for a in MODELS.values():
        add_model(s, a)
    return s


def keys(cands) -> list[str]:
    return [c.key for c in cands]


def test_candidates_are_the_front_then_the_near_threshold_models_nearest_first(study):
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    front = {TrialRecord.from_trial(t).accuracy_key for t in pareto_front(trials)}
    assert front == {MODELS["mid"].key}  # 'big' (0.89) is feasible too, but mid's smaller payload dominates it
    cands = candidates(trials, margin=0.05, max_points=8)
    # the front first; then 0.84 and 0.82 (0.01 and 0.03 below 0.85, within the margin), nearest first; 0.70 is
    # 0.15 below and a dominated feasible model gains nothing from a final training: both left out
    assert keys(cands) == [MODELS["mid"].key, MODELS["small"].key, MODELS["tiny"].key]
    assert [c.on_front for c in cands] == [True, False, False] and [c.dominated_by for c in cands] == [0, 0, 0]
    assert keys(candidates(trials, margin=0.02, max_points=8)) == keys(cands)[:2]
    assert keys(candidates(trials, margin=0.05, max_points=2)) == keys(cands)[:2]
    assert all(len(c.trials) == 4 for c in cands)  # every radio x codec of the model


def test_judged_rethresholds_feasibility_and_keeps_the_number(study):
    t = next(t for t in study.trials if TrialRecord.from_trial(t).accuracy_key == MODELS["small"].key)
    assert judged(t, TH) is t  # nothing changes at the trial's own th
    loose = judged(t, 0.10)
    r = TrialRecord.from_trial(loose)
    assert loose.number == t.number and r.feasible and r.infeasible_reason == ""
    assert loose.constraints["map50_drop"] == pytest.approx(BASE - 0.10 - 0.84)
    assert list(pareto_front([loose])) == [loose]
    assert not TrialRecord.from_trial(t).feasible and t.constraints["map50_drop"] > 0  # the original is untouched


def run_finalize(study, lifts: dict[str, float], calls: list | None = None, fail_after: int | None = None):
    """finalize with a stub training that lifts each model's mAP by ``lifts[name]``."""
    by_key = {a.key: (name, a) for name, a in MODELS.items()}
    fs = open_final(storage_of(study), study)
    added = []

    def train(t):
        name, a = by_key[TrialRecord.from_trial(t).accuracy_key]
        if calls is not None:
            calls.append(name)
        return AccuracyResult(**{**a.as_attrs(), "map50": a.map50 + lifts.get(name, 0.0), "finetune_steps": 300})

    def price(a, radio, codec, **kw):
        if fail_after is not None and len(added) >= fail_after:
            raise KeyboardInterrupt  # a kill between two final trials
        added.append((a.key, radio, codec))
        return score(a, radio, codec, pricing(), **kw)

    cands = candidates(study.get_trials(states=(TrialState.COMPLETE,)), 0.05, 8)
    return fs, finalize(study, fs, cands, "settings-A", TH, train, price, log=lambda m: None)


def snapshot(study):
    return [(t.number, t.values, t.user_attrs, t.constraints, t.params) for t in study.get_trials()]


def test_finalize_stores_final_trials_beside_the_untouched_study_and_resumes(study):
    before = snapshot(study)
    calls: list[str] = []
    lifts = {"mid": 0.01, "small": 0.02, "tiny": -0.01}
    fs, done = run_finalize(study, lifts, calls)
    assert snapshot(study) == before  # the search study is never written to
    assert fs.study_name == final_name("s") and load_final(storage_of(study), "s").study_name == fs.study_name
    assert calls == ["mid", "small", "tiny"]
    finals = fs.get_trials(states=(TrialState.COMPLETE,))
    assert len(finals) == 3 * 4  # one per model x radio x codec
    for f in finals:
        r = TrialRecord.from_trial(f)
        parent = study.trials[r.parent]
        pr = TrialRecord.from_trial(parent)
        assert r.role == FINAL and (r.accuracy_key, r.radio, r.codec) == (pr.accuracy_key, pr.radio, pr.codec)
        assert f.params == parent.params and r.mAP50_search == pr.mAP50
        name = next(n for n, a in MODELS.items() if a.key == r.accuracy_key)
        assert r.mAP50 == pytest.approx(MODELS[name].map50 + lifts[name])
        assert r.feasible == (r.mAP50 >= BASE - TH)
    by = {d.key: d for d in done}
    assert by[MODELS["small"].key].feasible_final and not by[MODELS["small"].key].feasible_search  # 0.86 now
    # resumed: nothing trained, nothing added
    calls.clear()
    fs2, done2 = run_finalize(study, lifts, calls)
    assert calls == [] and len(fs2.get_trials()) == 12 and not any(d.trained for d in done2)


def test_finalize_killed_between_final_trials_reuses_what_was_stored(study):
    with pytest.raises(KeyboardInterrupt):
        run_finalize(study, {}, fail_after=6)  # the 2nd model has 2 of its 4 final trials
    fs = load_final(storage_of(study), "s")
    assert len(fs.get_trials()) == 6
    calls: list[str] = []
    fs, _ = run_finalize(study, {}, calls)
    assert calls == ["tiny"]  # the stored model and the half-stored one are not trained again
    assert len(fs.get_trials()) == 12 and len(latest_finals(fs.get_trials())) == 12  # no (model, radio, codec) twice


def test_fidelity_switch_changes_exactly_the_finalized_rows(study):
    fs, _ = run_finalize(study, {"small": 0.03, "mid": -0.02})  # small 0.87 (feasible), mid 0.84 (not)
    search = study_view(study, fs, TH, "search")
    final = study_view(study, fs, TH, "final")
    assert study_view(study, fs, TH, "auto").fidelity == "final"
    assert study_view(study, None, TH, "auto").fidelity == "search"
    s_rows = pd.DataFrame([TrialRecord.from_trial(t).row(t, COLUMNS) for t in search.pool]).set_index("trial")
    f_rows = pd.DataFrame([TrialRecord.from_trial(t).row(t, COLUMNS) for t in final.pool]).set_index("trial")
    assert list(s_rows.index) == list(f_rows.index)  # the same trials, numbered as in the search study
    finalized = {MODELS[n].key for n in ("mid", "small", "tiny")}
    changed = f_rows["accuracy_key"].isin(finalized)
    assert (f_rows.loc[changed, "fidelity"] == "final").all() and (f_rows.loc[~changed, "fidelity"] == "search").all()
    cols = ["mAP50", "node_energy_mJ", "latency_ms", "feasible", "role", "parent"]
    pd.testing.assert_frame_equal(f_rows.loc[~changed, cols], s_rows.loc[~changed, cols])
    assert (f_rows.loc[changed, "mAP50_search"] == s_rows.loc[changed, "mAP50"]).all()
    assert (f_rows.loc[changed, ["role", "parent"]] == s_rows.loc[changed, ["role", "parent"]]).all().all()
    _, s_front = study_frames(search, COLUMNS)
    _, f_front = study_frames(final, COLUMNS)
    assert set(s_front["accuracy_key"]) == {MODELS["mid"].key}
    assert set(f_front["accuracy_key"]) == {MODELS["small"].key}  # mid fell below 0.85, small rose above it
    assert (f_front["fidelity"] == "final").all()


def test_exports_say_the_fidelity_of_every_point(study, tmp_path):
    fs, _ = run_finalize(study, {"small": 0.03})
    paths = export_all(study_view(study, fs, TH, "final"), tmp_path, COLUMNS)
    meta = json.loads(paths["pareto.json"].read_text())
    assert meta["fidelity"] == "final" and meta["th"] == TH
    assert {p["fidelity"] for p in meta["points"]} == {"final"}
    final_csv = pd.read_csv(paths["final.csv"])
    assert len(final_csv) == 12 and set(final_csv["role"]) == {FINAL}
    assert (pd.read_csv(paths["trials.csv"])["fidelity"] == "search").all()
    assert "final.csv" not in export_all(study_view(study), tmp_path / "plain", COLUMNS)


def test_agreement_statistics():
    a = agreement([0.80, 0.85, 0.90], [0.81, 0.91, 0.86], ["a", "b", "c"], threshold=0.86)
    assert a.n == 3 and a.kendall_tau == pytest.approx(1 / 3)  # one discordant pair of three
    assert a.mean_abs_change == pytest.approx((0.01 + 0.06 + 0.04) / 3)
    assert a.mean_change == pytest.approx((0.01 + 0.06 - 0.04) / 3)
    assert a.became_feasible == ("b",) and a.became_infeasible == ()
    assert agreement([0.8, 0.9], [0.7, 0.8], ["a", "b"], 0.85).became_infeasible == ("b",)
    assert math.isnan(agreement([0.8], [0.9], ["a"], 0.5).kendall_tau)


def test_report_tables_move_to_the_papers_threshold_when_final_numbers_allow(study):
    fs, _ = run_finalize(study, {"small": 0.03})
    v = study_view(study, fs, 0.10, "final")
    rows, _ = study_frames(v, COLUMNS)
    pool = pd.DataFrame([TrialRecord.from_trial(t).row(t, COLUMNS) for t in v.pool])
    final_rows = pd.DataFrame([TrialRecord.from_trial(t).row(t, COLUMNS) for t in v.finals])
    d = report_data(rows, 6, final_rows, pool, 0.10)
    assert d["table_th"] == PAPER_TH and "paper's threshold" in d["table_note"]
    assert d["agreement"].n == final_rows["accuracy_key"].nunique()
    assert set(d["final"]["feasibility"]) <= {"", "now feasible", "now infeasible"}
    # with every finalized model below 0.85, no split point is feasible at 0.05: the study's th is used, and said
    fs2 = optuna.create_study(study_name="t", directions=["minimize", "minimize"])
    for a in MODELS.values():
        add_model(fs2, AccuracyResult(**{**a.as_attrs(), "map50": min(a.map50, 0.83)}), th=0.10)
    v2 = study_view(fs2, None, 0.10, "search")
    r2, _ = study_frames(v2, COLUMNS)
    d2 = report_data(r2, 6, final_rows, pd.DataFrame([TrialRecord.from_trial(t).row(t, COLUMNS) for t in v2.pool]),
                     0.10)
    assert d2["table_th"] == 0.10 and "leave no split point feasible" in d2["table_note"]


@pytest.mark.slow
def test_finalize_on_the_quick_study_end_to_end(tmp_path):
    studies = tmp_path / "studies"
    cli(studies, "study.n_trials=4")
    s = load(studies)
    before = snapshot(s)
    trials_csv = (studies / "quick" / "trials.csv").read_text()
    p = cli(studies, "mode=finalize", "finalize.margin=1")
    assert snapshot(load(studies)) == before
    fs = optuna.load_study(study_name="quick.final", storage=f"sqlite:///{studies / 'quick.db'}")
    finals = [TrialRecord.from_trial(t) for t in fs.get_trials(states=(TrialState.COMPLETE,))]
    models = {r.accuracy_key for r in finals}
    assert finals and all(r.accuracy.finetune_steps == compose(["study=quick"]).train.final.steps
                          for r in finals if r.accuracy.j not in (0, 6))
    assert len(list((studies / "quick" / "final-models").glob("*.pt"))) == len(models)
    assert f"finalize: {len(models)} models trained" in p.stdout
    # exports: auto = final; trials.csv is the search's log, unchanged apart from the new columns' values
    pareto = json.loads((studies / "quick" / "pareto.json").read_text())
    assert pareto["fidelity"] == "final" and all(pt["fidelity"] in ("search", "final") for pt in pareto["points"])
    assert (studies / "quick" / "trials.csv").read_text() == trials_csv
    assert "Search-time vs final accuracy" in (studies / "quick" / "report.html").read_text()
    # resumable: a second run trains nothing
    p2 = cli(studies, "mode=finalize", "finalize.margin=1")
    assert "finalize: 0 models trained" in p2.stdout and len(fs.get_trials()) == len(finals)
    # the search-fidelity export gives back the search's own front
    cli(studies, "mode=export", "export.fidelity=search")
    assert {pt["fidelity"] for pt in json.loads((studies / "quick" / "pareto.json").read_text())["points"]} == \
        {"search"}
    # deploy ships a finalized point's final weights and numbers
    cli(studies, "mode=deploy")
    spec = json.loads(next((studies / "quick" / "deploy").glob("*/interface.json")).read_text())
    assert spec["fidelity"] == "final" and spec["key"] in models
    # finalizing with other accuracy settings than the study's is refused in one line
    p3 = cli(studies, "mode=finalize", "data.n_train=40", check=False)
    assert p3.returncode == 2 and "settings differ" in p3.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_study_finalize_true_finalizes_at_the_end_of_the_run(tmp_path):
    studies = tmp_path / "studies"
    p = cli(studies, "study.n_trials=2", "study.finalize=true", "finalize.max_points=1")
    assert "finalize: 1 models trained" in p.stdout
    assert p.stdout.index("finalize: 1 models") < p.stdout.index("feasible Pareto points at th=")  # before exports
    fs = optuna.load_study(study_name="quick.final", storage=f"sqlite:///{studies / 'quick.db'}")
    assert len({TrialRecord.from_trial(t).accuracy_key for t in fs.get_trials()}) == 1
    assert json.loads((studies / "quick" / "pareto.json").read_text())["fidelity"] == "final"
