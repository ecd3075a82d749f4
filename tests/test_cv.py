"""Cross-validation (``emoexp cv``): every scheme's leakage property, the leakage check itself,
each task's pool of units, a parent with its fold runs and aggregates (recomputed here from the
children), the baseline beside them, speech by actor and faces stratified over images, a fold
killed with SIGKILL and continued while finished folds are reused, two workers sharing the folds,
sweeps over folds (per-fold values for Optuna's WilcoxonPruner) and the dashboard page."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from emoexp import tracking as T
from emoexp.cli import main as cli
from emoexp.config import ConfigError, apply_overrides
from emoexp.data.folds import (
    CVPool,
    FoldViews,
    LeakageError,
    check_folds,
    make_folds,
    parse_scheme,
)
from emoexp.tasks import get_task

EAV_OPTIONS = {"epochs": 1, "window_size": 128, "stride": 128, "latent_dim": 16, "batch_size": 16, "lr": 1e-3,
               "log_model": False, "checkpoint_every": 0}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs torch on one thread (conftest's ``one_thread``)."""


@pytest.fixture(scope="module")
def eav4(tmp_path_factory) -> Path:
    """Four EAV subjects, 10 trials each (3 windows of 128 samples per trial at 250 Hz)."""
    from emoexp.data.synth import synth_eav

    return Path(synth_eav(tmp_path_factory.mktemp("cv-eav") / "eav", subjects=4, seed=1, trials=10,
                          n_samples=1000, with_video=False))


def _eav_cfg(root: Path, experiment: str, **kw):
    task = get_task("finetune_eav")
    return task, apply_overrides(task.default_config(), {**EAV_OPTIONS, "data_dir": str(root),
                                                         "experiment_name": experiment, **kw})


def _runs(experiment: str) -> list:
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    return list(client.search_runs([exp.experiment_id], max_results=1000)) if exp else []


def _children(experiment: str, kind: str = T.MODEL_KIND_DEEP) -> list:
    return sorted((r for r in _runs(experiment) if T.TAG_FOLD in r.data.tags
                   and r.data.tags.get(T.TAG_MODEL_KIND) == kind), key=lambda r: int(r.data.tags[T.TAG_FOLD]))


def _parents(experiment: str) -> list:
    return [r for r in _runs(experiment) if T.TAG_CV_SCHEME in r.data.tags and T.TAG_FOLD not in r.data.tags]


def _artifact_csv(run_id: str, name: str) -> list[dict[str, str]]:
    path = MlflowClient().download_artifacts(run_id, name)
    return list(csv.DictReader(io.StringIO(Path(path).read_text())))


# ------------------------------------------------------------------------------------------------
# schemes and the leakage check (no training)


def _pool(n_subjects: int = 6, trials: int = 8, subjects: bool = True, windows: int = 1) -> CVPool:
    """Subjects x trials units (``windows`` units per trial), labels cycling over 4 classes."""
    subj = np.repeat([f"s{i}" for i in range(n_subjects)], trials * windows)
    trial = np.asarray([f"{s}/{t}" for s in range(n_subjects) for t in range(trials) for _ in range(windows)])
    labels = np.tile(np.repeat(np.arange(trials) % 4, windows), n_subjects)

    def views(sides):
        return FoldViews({s: list(i) for s, i in sides.items()}, dict(sides))

    return CVPool(unit="window" if windows > 1 else "trial", labels=labels, subjects=subj if subjects else None,
                  trials=trial if windows > 1 else None, views=views)


def _sides_of(pool: CVPool, fold, key: np.ndarray) -> dict[str, set]:
    return {side: set(key[idx].tolist()) for side, idx in fold.sides().items()}


def test_loso_tests_every_subject_once_alone():
    pool = _pool()
    scheme = parse_scheme("loso")
    folds = make_folds(pool, scheme, seed=0, val_fraction=0.2)
    check_folds(pool, folds, scheme)
    assert len(folds) == 6
    assert sorted(s for f in folds for s in set(pool.subjects[f.test].tolist())) == [f"s{i}" for i in range(6)]
    for f in folds:
        sides = _sides_of(pool, f, pool.subjects)
        assert len(sides["test"]) == 1 and sides["val"] and sides["train"]
        assert not (sides["train"] & sides["val"] or sides["train"] & sides["test"] or sides["val"] & sides["test"])
        assert len(f.train) + len(f.val) + len(f.test) == len(pool)


def test_kfold_groups_subjects_and_is_seeded():
    pool = _pool(n_subjects=9)
    scheme = parse_scheme("kfold:3")
    folds = make_folds(pool, scheme, seed=4, val_fraction=0.25)
    check_folds(pool, folds, scheme)
    tested = np.zeros(len(pool), int)
    for f in folds:
        tested[f.test] += 1
        sides = _sides_of(pool, f, pool.subjects)
        assert len(sides["test"]) == 3
        assert not (sides["train"] & sides["test"] or sides["val"] & sides["test"] or sides["train"] & sides["val"])
    assert (tested == 1).all()
    again = make_folds(pool, scheme, seed=4, val_fraction=0.25)
    other = make_folds(pool, scheme, seed=5, val_fraction=0.25)
    assert all(np.array_equal(a.test, b.test) and np.array_equal(a.val, b.val) for a, b in zip(folds, again))
    assert any(not np.array_equal(a.test, b.test) for a, b in zip(folds, other))


def test_subject_kfold_keeps_trials_apart_and_tests_every_subject_each_fold():
    pool = _pool(n_subjects=3, trials=8, windows=3)   # three windows (units) per trial
    scheme = parse_scheme("subject_kfold:4")
    folds = make_folds(pool, scheme, seed=0, val_fraction=0.25)
    check_folds(pool, folds, scheme)
    assert len(folds) == 4
    tested: dict[str, int] = {}
    for f in folds:
        trials = _sides_of(pool, f, pool.trials)
        assert not (trials["train"] & trials["test"] or trials["val"] & trials["test"] or trials["train"] & trials["val"])
        subjects = _sides_of(pool, f, pool.subjects)
        assert subjects["test"] == subjects["train"] == subjects["val"] == {"s0", "s1", "s2"}
        for t in trials["test"]:
            tested[t] = tested.get(t, 0) + 1
    assert sorted(tested) == sorted(set(pool.trials.tolist())) and set(tested.values()) == {1}


def test_trial_kfold_keeps_whole_trials_on_one_side():
    pool = _pool(n_subjects=2, trials=10, windows=2)
    scheme = parse_scheme("trial_kfold:5")
    folds = make_folds(pool, scheme, seed=1, val_fraction=0.2)
    check_folds(pool, folds, scheme)
    for f in folds:
        trials = _sides_of(pool, f, pool.trials)
        assert not (trials["train"] & trials["test"] or trials["val"] & trials["test"] or trials["train"] & trials["val"])


def test_kfold_without_subjects_is_stratified_over_units():
    labels = np.repeat(np.arange(3), [30, 12, 9])
    pool = CVPool(unit="image", labels=labels, subjects=None, trials=None, views=lambda s: None)
    scheme = parse_scheme("kfold:3")
    folds = make_folds(pool, scheme, seed=0, val_fraction=0.2)
    check_folds(pool, folds, scheme)
    for f in folds:
        assert np.array_equal(np.bincount(labels[f.test], minlength=3), [10, 4, 3])   # stratified
        assert len(set(f.val) & set(f.test)) == 0 and len(f.val) > 0
    with pytest.raises(ConfigError, match="no subjects"):
        make_folds(pool, parse_scheme("loso"), seed=0, val_fraction=0.2)


def test_fold_file_reproduces_given_folds(tmp_path):
    pool = _pool(n_subjects=6)
    spec = tmp_path / "folds.json"
    spec.write_text(json.dumps([["s0", "s1"], {"test": [2, "3"], "val": ["Actor_04"]}, ["s4", "s5"]]))
    scheme = parse_scheme(f"file:{spec}")
    folds = make_folds(pool, scheme, seed=0, val_fraction=0.2)
    check_folds(pool, folds, scheme)
    assert [sorted(set(pool.subjects[f.test].tolist())) for f in folds] == [["s0", "s1"], ["s2", "s3"], ["s4", "s5"]]
    assert set(pool.subjects[folds[1].val].tolist()) == {"s4"}     # the file's own validation subjects
    spec.write_text(json.dumps([["s0"], ["nobody"]]))
    with pytest.raises(ConfigError, match="no subject matches 'nobody'"):
        make_folds(pool, parse_scheme(f"file:{spec}"), seed=0, val_fraction=0.2)
    for bad in ("kfold", "kfold:1", "loo", "file:/no/such.json"):
        with pytest.raises(ConfigError):
            parse_scheme(bad)


def test_leakage_check_stops_leaky_folds():
    pool = _pool(n_subjects=4)
    scheme = parse_scheme("loso")
    good = make_folds(pool, scheme, seed=0, val_fraction=0.3)
    f = good[0]
    # a subject on two sides (its first unit moved from train to test)
    moved = type(f)(0, f.train[1:], f.val, np.sort(np.concatenate([f.test, f.train[:1]])))
    with pytest.raises(LeakageError, match="on both the"):
        check_folds(pool, [moved, *good[1:]], scheme)
    # a unit on two sides
    twice = type(f)(0, f.train, f.val, np.sort(np.concatenate([f.test, f.val[:1]])))
    with pytest.raises(LeakageError, match="on two sides"):
        check_folds(pool, [twice, *good[1:]], scheme)
    # a unit on no side
    with pytest.raises(LeakageError, match="on no side"):
        check_folds(pool, [type(f)(0, f.train[1:], f.val, f.test), *good[1:]], scheme)
    # loso testing a subject twice
    with pytest.raises(LeakageError):
        check_folds(pool, [good[0], good[0], *good[2:]], scheme)


def test_a_leak_stops_the_run_with_an_error(eav4, monkeypatch):
    from emoexp import cv
    from emoexp.data import folds as F

    real = F.make_folds

    def leaky(pool, scheme, **kw):
        out = real(pool, scheme, **kw)
        f = out[0]
        out[0] = F.Fold(0, f.train[1:], f.val, np.sort(np.concatenate([f.test, f.train[:1]])))
        return out

    monkeypatch.setattr(F, "make_folds", leaky)
    task, cfg = _eav_cfg(eav4, "cv-leak")
    with pytest.raises(LeakageError):
        cv.run_cv(task, cfg, "loso")
    (parent,) = _parents("cv-leak")
    assert parent.info.status == "FAILED" and not _children("cv-leak")
    assert "LeakageError" in Path(MlflowClient().download_artifacts(parent.info.run_id, T.ART_ERROR)).read_text()


# ------------------------------------------------------------------------------------------------
# every task's pool


TINY = {  # generator options and config overrides per task (cf. tests/test_contracts.py)
    "pretrain_faced": ({"subjects": 3, "n_samples": 512}, {"window_size": 128, "stride": 128}, "loso"),
    "finetune_eav": (None, {"window_size": 128, "stride": 128}, "subject_kfold:3"),
    "train_eeg_llm": ({"subjects": 3, "trials": 4, "seconds": 3},
                      {"window_size": 64, "overlap": 0, "downsample": 8}, "loso"),
    "train_face": ({"n_per_class": 6}, {"dataset": "fer2013", "backbone": "small_cnn"}, "kfold:3"),
    "train_speech": ({"subjects": 3}, {"emotion_subset": "basic4", "clip_seconds": 1.0}, "loso"),
    "train_posture": ({"n_per_side": "train:8,val:4"}, {"seq_length": 12}, "kfold:2"),
    "train_classifier": ({"n": 40}, {}, "trial_kfold:4"),
}


def test_every_task_has_a_pool_setting():
    from emoexp.tasks import list_tasks

    assert set(TINY) == set(list_tasks())


@pytest.mark.parametrize("name", sorted(TINY))
def test_every_task_pools_its_data_into_leak_free_views(name, eav4, tmp_path):
    from emoexp.data.folds import check_views, fold_bundle
    from emoexp.data.registry import get_dataset, synthesize

    synth, overrides, folds = TINY[name]
    task = get_task(name)
    cfg = task.default_config()
    if synth is None:
        root = eav4
    else:
        dataset = overrides.get("dataset") or cfg.to_dict().get("dataset") or task.dataset
        opts = {**get_dataset(dataset).tiny, **synth}
        root = synthesize(dataset, tmp_path / "data", subjects=opts.pop("subjects", 1), seed=0, **opts)
    cfg = task.prepare(apply_overrides(cfg, {"data_dir": str(root), "log_model": False, **overrides}))
    data = task.build_data(cfg)
    pool = task.cv_pool(cfg, data)
    n_samples = sum(len(d) for d in (data.train, data.val, data.test) if d is not None)
    scheme = parse_scheme(folds)
    fold_list = make_folds(pool, scheme, seed=0, val_fraction=0.3)
    check_folds(pool, fold_list, scheme)
    seen = 0
    for f in fold_list:
        views = pool.views(f.sides())
        check_views(pool, f, views)
        bundle = fold_bundle(data, pool, f, views, scheme)
        assert len(bundle.train_targets) == len(bundle.train)
        seen += len(bundle.test)
        if hasattr(bundle.train, "augment"):   # training augmentation on the train side only
            assert not bundle.val.augment and not bundle.test.augment
        batch = [bundle.test[i] for i in range(min(2, len(bundle.test)))]
        assert all(data.primary_head in item for item in batch)
    if name != "train_eeg_llm" or cfg.split != "segment":
        assert seen == n_samples   # every sample tested once: the pool is the whole dataset


# ------------------------------------------------------------------------------------------------
# runs


@pytest.fixture(scope="module")
def eav_cv(eav4, tmp_path_factory):
    """``emoexp cv finetune_eav --folds loso --baseline`` on four subjects, through the CLI."""
    work = tmp_path_factory.mktemp("cv-run")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        args = ["cv", "finetune_eav", "--folds", "loso", "--baseline", "--data-dir", str(eav4),
                "--experiment-name", "cv-eav", *[x for k, v in EAV_OPTIONS.items()
                                                 for x in (f"--{k.replace('_', '-')}", str(v).lower())]]
        res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    return work, res.output


def test_cv_makes_a_parent_and_a_run_per_fold(eav_cv):
    (parent,) = _parents("cv-eav")
    deep = _children("cv-eav")
    assert [int(r.data.tags[T.TAG_FOLD]) for r in deep] == [0, 1, 2, 3]
    tags = parent.data.tags
    assert tags[T.TAG_TASK] == "finetune_eav" and tags[T.TAG_CV_SCHEME] == "loso" and parent.info.status == "FINISHED"
    subjects = []
    for r in deep:
        assert r.data.tags[T.MLFLOW_PARENT_RUN] == parent.info.run_id and r.info.status == "FINISHED"
        assert r.data.tags[T.TAG_LEAKAGE] == "passed" and r.data.tags[T.TAG_CV_SCHEME] == "loso"
        assert {T.M_TRAIN_LOSS, T.M_VAL_F1, T.M_TEST_ACC, T.M_TEST_F1, T.M_BEST_VAL_F1} <= set(r.data.metrics)
        split = json.loads(Path(MlflowClient().download_artifacts(r.info.run_id, T.ART_SPLIT)).read_text())
        side = split["subjects"]
        assert len(side["test"]) == 1 and not set(side["test"]) & (set(side["train"]) | set(side["val"]))
        subjects += side["test"]
    assert sorted(subjects) == ["subject1", "subject2", "subject3", "subject4"]
    assert "fold 3" in eav_cv[1] and "baseline." in eav_cv[1]


def test_parent_aggregates_are_the_folds_mean_and_sample_std(eav_cv):
    (parent,) = _parents("cv-eav")
    m = parent.data.metrics
    for kind, runs, prefix in (("deep", _children("cv-eav"), ""),
                               ("baseline", _children("cv-eav", T.MODEL_KIND_BASELINE), "baseline.")):
        assert len(runs) == 4, kind
        for metric in (T.M_TEST_ACC, T.M_TEST_F1, T.M_BEST_VAL_F1):
            vals = [r.data.metrics[metric] for r in runs]
            assert m[f"{prefix}{metric}_mean"] == pytest.approx(np.mean(vals), abs=1e-9), (kind, metric)
            assert m[f"{prefix}{metric}_std"] == pytest.approx(np.std(vals, ddof=1), abs=1e-9), (kind, metric)
    for r in _children("cv-eav", T.MODEL_KIND_BASELINE):
        assert r.data.tags[T.TAG_LEAKAGE] == "passed" and r.data.tags[T.MLFLOW_PARENT_RUN] == parent.info.run_id
    folds = _artifact_csv(parent.info.run_id, T.ART_CV_FOLDS)
    assert [r["fold"] for r in folds] == ["0", "1", "2", "3"]
    by_fold = {int(r.data.tags[T.TAG_FOLD]): r for r in _children("cv-eav")}
    for row in folds:
        run = by_fold[int(row["fold"])]
        assert row["run_id"] == run.info.run_id
        assert float(row[T.M_TEST_F1]) == pytest.approx(run.data.metrics[T.M_TEST_F1])
        assert row["baseline_run_id"] and float(row[f"baseline.{T.M_TEST_ACC}"]) >= 0
    subjects = _artifact_csv(parent.info.run_id, T.ART_CV_SUBJECTS)
    assert [r["subject"] for r in subjects] == ["subject1", "subject2", "subject3", "subject4"]
    for row in subjects:   # loso: a subject's scores are its fold's test scores
        run = by_fold[int(row["folds"])]
        assert float(row[T.M_TEST_ACC]) == pytest.approx(run.data.metrics[T.M_TEST_ACC])
        assert float(row[T.M_TEST_F1]) == pytest.approx(run.data.metrics[T.M_TEST_F1])
        assert f"baseline.{T.M_TEST_F1}" in row


def test_the_same_command_again_reuses_every_fold(eav_cv, eav4):
    from emoexp.cv import run_cv

    before = {r.info.run_id for r in _runs("cv-eav")}
    task, cfg = _eav_cfg(eav4, "cv-eav")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(eav_cv[0])
        result = run_cv(task, cfg, "loso", baseline=True)
    assert {r.info.run_id for r in _runs("cv-eav")} == before
    assert [f["status"] for f in result.folds] == ["reused"] * 4
    assert result.parent_run_id == _parents("cv-eav")[0].info.run_id


def test_dashboard_draws_folds_and_subjects(eav_cv, tmp_path):
    from emoexp.dashboards import build_dashboards

    index = build_dashboards(experiment="cv-eav", out_dir=str(tmp_path / "dash"))
    page = (index.parent / "cv.html").read_text()
    (parent,) = _parents("cv-eav")
    assert parent.info.run_id in page and 'href="cv.html"' in index.read_text()
    assert page.count("Plotly.newPlot(") == 3          # test_macro_f1 and test_accuracy per fold, per subject
    assert "baseline mean" in page and "deep mean" in page and "subject4" in page
    assert "1 cross-validation" in index.read_text()
    runs_page = (index.parent / "runs.html").read_text()
    assert parent.info.run_id not in runs_page          # a CV parent is not a training run


@pytest.mark.slow
def test_speech_folds_by_actor(tmp_path):
    from emoexp.data.synth_speech import synth_ravdess

    root = synth_ravdess(tmp_path / "ravdess", subjects=3, seed=0, statements=1, repetitions=1, sample_rate=16000)
    res = CliRunner().invoke(cli, ["cv", "train_speech", "--folds", "loso", "--data-dir", str(root),
                                   "--experiment-name", "cv-speech", "--epochs", "1", "--batch-size", "8",
                                   "--emotion-subset", "basic4", "--clip-seconds", "1.0", "--context-layers", "1",
                                   "--n-mels", "16", "--augment", "false", "--log-model", "false",
                                   "--checkpoint-every", "0"])
    assert res.exit_code == 0, res.output
    deep = _children("cv-speech")
    assert len(deep) == 3
    tested = []
    for r in deep:
        split = json.loads(Path(MlflowClient().download_artifacts(r.info.run_id, T.ART_SPLIT)).read_text())
        a = split["actors"]
        assert len(a["test"]) == 1 and not set(a["test"]) & (set(a["train"]) | set(a["val"]))
        tested += a["test"]
    assert sorted(tested) == ["1", "2", "3"]
    (parent,) = _parents("cv-speech")
    assert len(_artifact_csv(parent.info.run_id, T.ART_CV_SUBJECTS)) == 3


@pytest.mark.slow
def test_faces_fold_stratified_over_images(tmp_path):
    from emoexp.data.synth_faces import synth_fer2013

    root = synth_fer2013(tmp_path / "fer", seed=0, n_per_class=6)
    res = CliRunner().invoke(cli, ["cv", "train_face", "--folds", "kfold:3", "--data-dir", str(root),
                                   "--dataset", "fer2013", "--backbone", "small_cnn", "--experiment-name", "cv-face",
                                   "--epochs", "1", "--batch-size", "16", "--log-model", "false",
                                   "--checkpoint-every", "0"])
    assert res.exit_code == 0, res.output
    deep = _children("cv-face")
    assert len(deep) == 3
    counts = []
    for r in deep:
        split = json.loads(Path(MlflowClient().download_artifacts(r.info.run_id, T.ART_SPLIT)).read_text())
        assert split["unit"] == "image" and "subjects" not in split
        counts.append(split["counts"]["test"])
    for c in counts[0]:   # each class spread evenly over the folds' test sides
        assert max(x[c] for x in counts) - min(x[c] for x in counts) <= 1
    (parent,) = _parents("cv-face")
    assert T.M_TEST_F1 + "_std" in parent.data.metrics
    assert T.ART_CV_SUBJECTS not in {a.path for a in MlflowClient().list_artifacts(parent.info.run_id)}


# ------------------------------------------------------------------------------------------------
# interruption, workers


def _cv_process(args: list[str], **env) -> subprocess.Popen:
    full = {**os.environ, "PYTHONUNBUFFERED": "1", "EMOEXP_CV_POLL": "1", "TQDM_DISABLE": "1", **env}
    return subprocess.Popen([sys.executable, "-m", "emoexp", "cv", *args], env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _cli_args(root: Path, experiment: str, epochs: int, folds: str = "loso") -> list[str]:
    opts = {**EAV_OPTIONS, "epochs": epochs}
    return ["finetune_eav", "--folds", folds, "--data-dir", str(root), "--experiment-name", experiment,
            *[x for k, v in opts.items() for x in (f"--{k.replace('_', '-')}", str(v).lower())]]


def test_killed_fold_is_continued_and_finished_folds_are_reused(eav4):
    from emoexp import engine
    from emoexp.cv import run_cv

    exp = "cv-kill"
    task, cfg = _eav_cfg(eav4, exp, epochs=2)
    # 1. fold 0 finishes, then the CV is stopped (as a sweep's pruner would)
    first = run_cv(task, cfg, "kfold:2", fold_callback=lambda k, m: True)
    assert first.stop_reason == "pruned" and [f.get("status") for f in first.folds] == ["trained", None]
    done = _children(exp)[0]
    # 2. the same command in another process: fold 0 reused, fold 1 SIGKILLed after its first epoch
    proc = _cv_process(_cli_args(eav4, exp, 2, "kfold:2"), **{engine.FAULT_ENV: "1"})
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL, out[-3000:]
    deep = _children(exp)
    assert len(deep) == 2 and deep[0].info.run_id == done.info.run_id
    killed = deep[1]
    assert killed.info.status == "RUNNING" and killed.data.tags[T.TAG_FOLD] == "1"
    # 3. again: fold 0 reused, fold 1 continued from its checkpoint (the same run)
    result = run_cv(task, cfg, "kfold:2")
    assert [f["status"] for f in result.folds] == ["reused", "continued"]
    deep = _children(exp)
    assert [r.info.run_id for r in deep] == [done.info.run_id, killed.info.run_id]
    assert deep[1].info.status == "FINISHED" and deep[1].data.tags[T.TAG_CONTINUED] == "1"
    hist = MlflowClient().get_metric_history(killed.info.run_id, T.M_TRAIN_LOSS)
    assert sorted({h.step for h in hist}) == [1, 2]
    (parent,) = _parents(exp)
    assert parent.data.tags[T.TAG_STOP_REASON] == "completed"
    assert parent.data.metrics[f"{T.M_TEST_F1}_mean"] == pytest.approx(
        np.mean([r.data.metrics[T.M_TEST_F1] for r in deep]))


def test_a_dead_workers_claim_is_taken_over(eav4):
    """A fold claimed by a worker that died before it made its run is claimed again (attempt 1);
    a live worker's claim is left alone."""
    from emoexp import cv
    from emoexp.data.folds import parse_scheme

    exp = "cv-takeover"
    task, cfg = _eav_cfg(eav4, exp)
    client = MlflowClient()
    exp_id = client.create_experiment(exp)
    key = cv.cv_key(task, cfg, parse_scheme("kfold:2"))
    parent = cv._find_or_create_parent(client, exp_id, key, "takeover", {cv.TAG_CV_KEY: key})
    host = os.uname().nodename
    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)
    ghost = f"feedbeef0000|{host}|{gone}"
    client.log_param(parent, f"{cv.CLAIM}deep.0.0", ghost)           # its process is gone
    client.set_tag(parent, cv.TAG_ALIVE + "feedbeef0000", f"{host}|{gone}|{time.time():.0f}")
    assert not cv.claimer_alive(ghost, client.get_run(parent).data.tags)
    result = cv.run_cv(task, cfg, "kfold:2")
    assert result.parent_run_id == parent
    params = client.get_run(parent).data.params
    assert params[f"{cv.CLAIM}deep.0.0"] == ghost and not params[f"{cv.CLAIM}deep.0.1"].startswith("feedbeef")
    assert [f["status"] for f in result.folds] == ["trained", "trained"]
    me = f"cafe00000000|{host}|{os.getpid()}"
    assert cv.claimer_alive(me, {cv.TAG_ALIVE + "cafe00000000": f"{host}|{os.getpid()}|{time.time():.0f}"})
    assert not cv.claimer_alive(me, {cv.TAG_ALIVE + "cafe00000000": f"{host}|{os.getpid()}|0"})     # it ended
    beat = {cv.TAG_ALIVE + "cafe00000000": f"{host}|{os.getpid()}|{time.time() - 3600:.0f}"}
    assert cv.claimer_alive(me, beat)                       # same host: a live process counts, beat or not
    assert not cv.claimer_alive(f"{me}|1.00", beat)         # ... but not a later process with its pid
    other = "cafe00000000|elsewhere|1"
    assert cv.claimer_alive(other, {cv.TAG_ALIVE + "cafe00000000": f"elsewhere|1|{time.time():.0f}"})
    assert not cv.claimer_alive(other, {cv.TAG_ALIVE + "cafe00000000": f"elsewhere|1|{time.time() - 3600:.0f}"})


def test_two_workers_share_the_folds(eav4):
    exp = "cv-workers"
    procs = [_cv_process(_cli_args(eav4, exp, 1)) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outs)
    parents = _parents(exp)
    assert len(parents) == 1                              # simultaneous parents: one kept, the other deleted
    deep = _children(exp)
    assert sorted(int(r.data.tags[T.TAG_FOLD]) for r in deep) == [0, 1, 2, 3]   # no fold trained twice
    assert all(r.info.status == "FINISHED" and r.data.tags[T.MLFLOW_PARENT_RUN] == parents[0].info.run_id
               for r in deep)
    claims = {k: v for k, v in parents[0].data.params.items() if k.startswith("cv.claim.deep.")}
    assert sorted(claims) == [f"cv.claim.deep.{k}.0" for k in range(4)]
    share = {}
    for r in deep:
        w = r.data.tags["emoexp.cv_worker"].split("|")[0]
        share[w] = share.get(w, 0) + 1
    print(f"folds per worker: {share}")
    assert f"{T.M_TEST_F1}_mean" in parents[0].data.metrics


# ------------------------------------------------------------------------------------------------
# sweeps over folds


def test_sweep_over_folds_reports_each_fold_to_a_wilcoxon_pruner(eav4, tmp_path):
    import optuna

    from emoexp.sweeps import run_sweep

    space = tmp_path / "space.yaml"
    space.write_text("lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    res = run_sweep("finetune_eav", {**EAV_OPTIONS, "data_dir": str(eav4)}, n_trials=2, storage=storage,
                    study_name="cv-sweep", space=str(space), folds="kfold:2", experiment_name="cv-sweep")
    study = optuna.load_study(study_name="cv-sweep", storage=storage)
    client = MlflowClient()
    sweep = client.get_run(res.parent_run_id).data.params
    assert sweep["pruner"] == "wilcoxon" and sweep["folds"] == "kfold:2"    # median becomes wilcoxon with folds
    from emoexp.sweeps import make_pruner

    assert isinstance(make_pruner("wilcoxon"), optuna.pruners.WilcoxonPruner)
    for t in study.trials:
        assert t.state.name == "COMPLETE" and sorted(t.intermediate_values) == [0, 1]
        assert t.value == pytest.approx(np.mean(list(t.intermediate_values.values())))
        run = client.get_run(t.user_attrs["mlflow_run_id"])     # the trial's run is its CV's parent
        assert run.data.tags[T.TAG_CV_SCHEME] == "kfold:2" and run.data.tags[T.TAG_TRIAL] == str(t.number)
        assert run.data.tags[T.MLFLOW_PARENT_RUN] == res.parent_run_id
        assert run.data.metrics[T.M_BEST_VAL_F1] == pytest.approx(t.value)
        assert run.data.metrics[f"{T.M_BEST_VAL_F1}_mean"] == pytest.approx(t.value)
    assert res.epochs_trained == 4 and len(_children("cv-sweep")) == 4
