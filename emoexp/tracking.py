"""The MLflow vocabulary (names as constants, used by producer and consumer) and run lifecycle.

Everything the engine tells a tracker goes through :class:`Tracker`; :class:`NullTracker`
does nothing (benchmarks measure tracking on vs off with it), :class:`MlflowTracker` logs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Tags -------------------------------------------------------------------------------------------
TAG_TASK = "emoexp.task"
TAG_MODALITY = "emoexp.modality"
TAG_DATASET = "emoexp.dataset"
TAG_PARENT_RUN = "emoexp.parent_run_id"
TAG_ROOT_RUN = "emoexp.root_run_id"
TAG_RESUMED_FROM = "emoexp.resumed_from"
TAG_RESUMED_EPOCH = "emoexp.resumed_epoch"
TAG_LINEAGE_DEPTH = "emoexp.lineage_depth"
TAG_PRETRAINED_FROM = "emoexp.pretrained_from"          # the source as given (an alias moves)
TAG_PRETRAINED_RESOLVED = "emoexp.pretrained_resolved"  # what it was then: models:/NAME/VERSION or runs:/ID
TAG_PRETRAINED_RUN = "emoexp.pretrained_run_id"         # the run that trained those weights
TAG_VIDEO_ENCODER = "emoexp.video_encoder"
TAG_CONTINUED = "emoexp.continued_at_epoch"
TAG_CHANNEL_ADAPTER = "emoexp.channel_adapter"
TAG_STUDY = "emoexp.study"
TAG_TRIAL = "emoexp.trial_number"
TAG_STOP_REASON = "emoexp.stop_reason"
TAG_MODEL_KIND = "emoexp.model_kind"    # deep | baseline (a classical model on classical features)
MODEL_KIND_DEEP = "deep"
MODEL_KIND_BASELINE = "baseline"
TAG_SWEEP = "emoexp.sweep"              # = SWEEP_PARENT on the run that holds a study's trials
SWEEP_PARENT = "parent"
TAG_BEST_RUN = "emoexp.best_run_id"     # on a sweep parent: the best trial's run
# The process behind a run (emoexp.liveness): a run killed at any point can be told from a live one.
TAG_HOST = "emoexp.host"
TAG_PID = "emoexp.pid"
TAG_PID_START = "emoexp.pid_start"      # the process's start time: a reused pid is another process
TAG_HEARTBEAT = "emoexp.heartbeat"      # unix seconds of the last beat, every TAG_HEARTBEAT_S seconds
TAG_HEARTBEAT_S = "emoexp.heartbeat_interval"
TAG_KILLED_WHY = "emoexp.killed_why"    # `emoexp runs mark-killed`: why the run was found dead
HEARTBEAT_ENV = "EMOEXP_HEARTBEAT_S"    # seconds between a run's heartbeats (default 30)
DEFAULT_HEARTBEAT_S = 30.0
TAG_CV_SCHEME = "emoexp.cv_scheme"      # cross-validation: the scheme (loso, kfold:5 ...) on parent and folds
TAG_FOLD = "emoexp.fold"                # on a fold's run: its index, from 0
TAG_LEAKAGE = "emoexp.leakage_check"    # on a fold's run: passed (a failed check stops the run)
MLFLOW_PARENT_RUN = "mlflow.parentRunId"
# What a branch inherits from its parent (it starts from weights that came from there).
INHERITED_TAGS = (TAG_PRETRAINED_FROM, TAG_PRETRAINED_RESOLVED, TAG_PRETRAINED_RUN, TAG_CHANNEL_ADAPTER,
                  TAG_VIDEO_ENCODER)
MLFLOW_DESCRIPTION = "mlflow.note.content"

# Params -----------------------------------------------------------------------------------------
PARAM_WEIGHT_PREFIX = "sampling_weight."
PARAM_SWEEP_METRIC = "sweep_metric"      # on a sweep parent: the objective
PARAM_RESOLVED_PREFIX = "resolved."      # + key: what the task resolved a setting to (encoder=auto -> cnn)

# Metrics (step = epoch number, starting at 1) ----------------------------------------------------
M_TRAIN_LOSS = "train_loss"
M_VAL_LOSS = "val_loss"
M_VAL_ACC = "val_accuracy"
M_VAL_F1 = "val_macro_f1"
M_VAL_F1_CLASS = "val_f1."            # + class name
M_LR = "lr"
M_EPOCH_TIME = "epoch_time_s"
M_SAMPLES_PER_S = "samples_per_s"
M_BEST_VAL_F1 = "best_val_macro_f1"
M_BEST_EPOCH = "best_epoch"
M_TEST_ACC = "test_accuracy"
M_TEST_F1 = "test_macro_f1"
M_SKIPPED = "data.skipped_files"

# Artifacts --------------------------------------------------------------------------------------
ART_CONFIG = "config.yaml"
ART_CKPT_DIR = "checkpoints"
ART_BEST = "best.pt"
ART_LAST = "last.pt"
ART_LINEAGE = "lineage.json"
ART_WEIGHT_CHANGES = "weight_changes.log"
ART_SPLIT = "split.json"
ART_EVAL_DIR = "eval"
ART_ERROR = "error.txt"
ART_CV_FOLDS = "cv_folds.csv"           # on a cross-validation parent: one row per fold
ART_CV_SUBJECTS = "cv_subjects.csv"     # on a cross-validation parent: one row per test subject
MODEL_NAME = "model"                   # the logged MLflow model: runs:/<id>/model
MODEL_CHECKPOINT = "checkpoint"        # the artifact key of the weights inside the MLflow model

# Registry (aliases, not the deprecated stages) --------------------------------------------------
REGISTERED_MODEL_PREFIX = "emoexp-"    # every registered model of the project starts so
ALIAS_STAGING = "staging"
ALIAS_PRODUCTION = "production"
TAG_PROMOTED_METRIC = "emoexp.promoted_metric"        # on a version: why it holds @staging
TAG_PROMOTED_VALUE = "emoexp.promoted_value"
TAG_PREVIOUS_VERSION = "emoexp.previous_version"      # the @staging holder it replaced, or NO_VERSION
TAG_PREVIOUS_PRODUCTION = "emoexp.previous_production_version"
NO_VERSION = "none"


def epoch_checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch:03d}.pt"


def head_metric(head: str, metric: str, primary: bool) -> str:
    """Heads other than the primary prefix their metrics: ``gender.val_accuracy``."""
    return metric if primary else f"{head}.{metric}"


# Trackers ---------------------------------------------------------------------------------------


class Tracker:
    """Tracking off: every call is a no-op. The engine talks only to this interface."""

    run_id: str | None = None
    enabled = False

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def set_tags(self, tags: dict[str, Any]) -> None: ...
    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None: ...
    def log_artifacts(self, local_dir: str | Path, artifact_path: str | None = None) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_input(self, info: dict[str, Any]) -> None: ...
    def logged_metric_steps(self) -> dict[str, set[int]]:
        return {}


NullTracker = Tracker


class MlflowTracker(Tracker):
    """Logs to the active MLflow run (see :func:`mlflow_run`)."""

    enabled = True

    def __init__(self, run_id: str):
        from mlflow import MlflowClient

        self.run_id = run_id
        self.client = MlflowClient()

    def log_params(self, params: dict[str, Any]) -> None:
        """Log params without colliding with what ``mlflow run`` logged already.

        ``mlflow run`` logs every ``-P`` as given; logging the same key with another string
        (an absolute path, ``True`` vs ``true``) raises, so keys already present are skipped;
        the full resolved config is in ``config.yaml`` either way.
        """
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        fresh, differ = [], []
        for k, v in params.items():
            s = param_text(v)
            if k in existing:
                if existing[k] != s:
                    differ.append(f"{k}={existing[k]} (emoexp writes {s})")
                continue
            fresh.append(Param(k, s))
        if differ:
            log.warning("mlflow run logged these -P values as typed, not in emoexp's form, so runs "
                        "started otherwise show them differently: %s", "; ".join(differ))
        for i in range(0, len(fresh), 100):  # the store's batch limit
            self.client.log_batch(self.run_id, params=fresh[i : i + 100], synchronous=True)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        batch = [Metric(k, float(v), ts, step or 0) for k, v in metrics.items()]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[i : i + 1000])

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(local_path), artifact_path)

    def log_artifacts(self, local_dir: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_input(self, info: dict[str, Any]) -> None:
        """Record the dataset (name, digest, source) with ``mlflow.log_input``."""
        import warnings

        import mlflow
        import pandas as pd

        try:
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            df = pd.DataFrame([{k: str(v) for k, v in info.items() if k != "source"}])
            ds = mlflow.data.from_pandas(
                df, source=str(info.get("source", "")), name=str(info.get("dataset", "dataset"))
            )
            mlflow.log_input(ds, context="training")
        except Exception as e:  # lineage of inputs is informative, never fatal
            log.warning("could not log the dataset input: %s", e)

    def logged_metric_steps(self) -> dict[str, set[int]]:
        run = self.client.get_run(self.run_id)
        out: dict[str, set[int]] = {}
        for key in run.data.metrics:
            out[key] = {m.step for m in self.client.get_metric_history(self.run_id, key)}
        return out


def param_text(v: Any) -> str:
    """The one text form of a param value, whichever way the run started.

    ``mlflow run`` logs each declared parameter as ``shlex.quote(str(value))`` before emoexp
    runs, and a param cannot change afterwards; emoexp writes every value the same way: booleans
    ``true``/``false``, floats as Python's shortest round-trip form (``0.0001``), strings as
    shell words (an empty string is ``''``, text with spaces is quoted).
    """
    import shlex

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return shlex.quote(v)[:6000]
    return str(v)[:6000]


def run_experiment_id(run_id: str | None) -> str | None:
    """The experiment of ``run_id`` in the current store; None when there is no such run."""
    if not run_id:
        return None
    try:
        from mlflow import MlflowClient

        return MlflowClient().get_run(run_id).info.experiment_id
    except Exception:  # a checkpoint from another store: the run is not here
        return None


def ensure_experiment(name: str, client: Any = None) -> str:
    """The id of experiment ``name``, created when missing; safe when several processes start at once.

    ``mlflow.set_experiment(name)`` loses the race: when another process creates the experiment
    between its lookup and its create, it returns without making the experiment active, and the
    run lands in ``Default``.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = client or MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    exp = client.get_experiment_by_name(name)
    if exp is None:  # created and deleted again at once: say so rather than guess
        raise MlflowException(f"experiment {name!r} could not be created or found")
    return exp.experiment_id


@contextlib.contextmanager
def mlflow_run(
    *,
    experiment_name: str,
    experiment_id: str | None = None,
    run_name: str | None = None,
    run_id: str | None = None,
    nested: bool = False,
    tags: dict[str, str] | None = None,
    description: str | None = None,
) -> Iterator[MlflowTracker]:
    """Start (or re-attach to) a run and end it with the right status, in one place.

    Inside ``mlflow run`` (``MLFLOW_RUN_ID`` set) the step's own run is re-attached. A new run
    goes to ``experiment_id`` when given (a branch: its parent's), else to ``experiment_name``.
    Every run gets the code's tags (:func:`emoexp.project.source_tags`: git commit, version), as
    ``mlflow run`` runs do. An exception ends the run FAILED with its traceback as ``error.txt``;
    Ctrl-C ends it KILLED.
    """
    import mlflow

    env_run = os.environ.get("MLFLOW_RUN_ID")
    kwargs: dict[str, Any] = {}
    rename = False
    if run_id:
        kwargs["run_id"] = run_id
        kwargs["nested"] = nested  # re-attach inside an active run (a cross-validation fold continued)
    elif env_run and not nested and mlflow.active_run() is None:
        kwargs["run_id"] = env_run
        rename = bool(run_name)  # `mlflow run` names its runs at random; ours say what they are
    else:
        if experiment_id and not nested:
            kwargs["experiment_id"] = experiment_id
        elif not nested or mlflow.active_run() is None:
            mlflow.set_experiment(experiment_id=ensure_experiment(experiment_name or "Default"))
        kwargs["run_name"] = run_name
        kwargs["nested"] = nested
    if env_run:
        # Consumed: MLflow would otherwise re-attach every later start_run (nested trials too)
        # to the project step's run instead of creating a child.
        os.environ.pop("MLFLOW_RUN_ID", None)
    if description and "run_id" not in kwargs:
        kwargs["description"] = description
    if "run_id" in kwargs and mlflow.active_run() is None:
        # re-attaching (continue, a sweep's run, `mlflow run`'s step): MLflow refuses a run of
        # another experiment than the one an earlier run in this process made active
        from mlflow import MlflowClient

        exp = MlflowClient().get_run(kwargs["run_id"]).info.experiment_id
        mlflow.set_experiment(experiment_id=exp)
    run = mlflow.start_run(**kwargs, tags=tags)
    tracker = MlflowTracker(run.info.run_id)
    if rename:
        tracker.client.update_run(run.info.run_id, name=run_name)
    if description and "run_id" in kwargs:
        tracker.set_tags({MLFLOW_DESCRIPTION: description})
    from emoexp.project import MLFLOW_GIT_COMMIT, source_tags

    code = dict(source_tags())
    if "run_id" in kwargs and run.data.tags.get(MLFLOW_GIT_COMMIT):
        code.pop(MLFLOW_GIT_COMMIT, None)  # `mlflow run` recorded the project's own commit
    heartbeat = Heartbeat(run.info.run_id)
    tracker.set_tags({**code, **heartbeat.tags()})
    heartbeat.start()
    def end(status: str) -> None:
        """Write the run's final status (inside an ``except``: with the traceback)."""
        with _sigterm_waits():
            heartbeat.stop()
            if status != "FINISHED":
                _end_with_error(tracker, status)
                return
            from emoexp import faults

            faults.point("before_status")
            mlflow.end_run("FINISHED")

    try:
        yield tracker
    except KeyboardInterrupt:
        end("KILLED")
        raise
    except BaseException:
        end("FAILED")
        raise
    end("FINISHED")


@contextlib.contextmanager
def _sigterm_waits() -> Iterator[None]:
    """A SIGTERM that arrives while a run's final status is written waits until it is written.

    torchrun SIGTERMs the surviving ranks when one dies, often just as rank 0 is ending its run
    FAILED on the collective's error; raised there (:func:`emoexp.distributed.fail_on_sigterm`),
    it would leave the run RUNNING. The signal is held and delivered to the previous handler
    afterwards. Python runs signal handlers in the main thread only, so that is where it applies.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
        if held:
            signal.raise_signal(signal.SIGTERM)


def heartbeat_interval() -> float:
    """Seconds between a run's heartbeats: ``$EMOEXP_HEARTBEAT_S``, else 30."""
    try:
        value = float(os.environ.get(HEARTBEAT_ENV, "") or DEFAULT_HEARTBEAT_S)
    except ValueError:
        value = DEFAULT_HEARTBEAT_S
    return value if value > 0 else DEFAULT_HEARTBEAT_S


class Heartbeat:
    """Who runs a run (host, pid, process start: tags set once) and that it still does (tag
    ``emoexp.heartbeat`` refreshed every :func:`heartbeat_interval` seconds by a daemon thread),
    so that a run whose process died, at any point, can be told from a live one
    (:func:`run_liveness`)."""

    def __init__(self, run_id: str, interval: float | None = None):
        import threading

        self.run_id = run_id
        self.interval = interval or heartbeat_interval()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"emoexp-heartbeat-{run_id[:8]}", daemon=True)

    def tags(self) -> dict[str, str]:
        from emoexp.liveness import this_process

        me = this_process()
        return {TAG_HOST: me["host"], TAG_PID: me["pid"], TAG_PID_START: me["start"],
                TAG_HEARTBEAT: f"{time.time():.0f}", TAG_HEARTBEAT_S: f"{self.interval:g}"}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _beat(self) -> None:
        from mlflow import MlflowClient

        client = MlflowClient()
        while not self._stop.wait(self.interval):
            try:
                client.set_tag(self.run_id, TAG_HEARTBEAT, f"{time.time():.0f}")
            except Exception as e:  # a store outage: the next beat may get through
                log.debug("heartbeat of run %s not recorded: %s", self.run_id, e)


# A RUNNING run that records no process at all (started by `mlflow run`, whose command then failed
# before emoexp started; or by an older emoexp) is taken for dead once it is this old.
NO_PROCESS_GRACE_S = 600.0


def run_liveness(run, now: float | None = None):
    """:class:`emoexp.liveness.Liveness` of a RUNNING run (``alive``, ``dead`` or ``unknown``);
    None for a run that has ended. Same host: the pid answers at once; another host: the
    heartbeat, stale after 3 intervals."""
    from emoexp import liveness as L

    if run.info.status != "RUNNING":
        return None
    tags = run.data.tags
    now = time.time() if now is None else now
    if not tags.get(TAG_PID):
        age = now - (run.info.start_time or 0) / 1000.0
        if age > NO_PROCESS_GRACE_S:
            return L.Liveness(L.DEAD, f"RUNNING for {age / 60:.0f} min and no emoexp process ever recorded "
                                      "itself (its start failed, or an older emoexp ran it)")
        return L.Liveness(L.UNKNOWN, "no process recorded yet")
    return L.check(tags.get(TAG_HOST), tags.get(TAG_PID), tags.get(TAG_PID_START), tags.get(TAG_HEARTBEAT),
                   tags.get(TAG_HEARTBEAT_S), now=now)


def logged_models(run_id: str, name: str = MODEL_NAME) -> list:
    """The MLflow LoggedModels named ``name`` that run ``run_id`` logged (any status)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    exp = client.get_run(run_id).info.experiment_id
    out, token = [], None
    while True:
        page = client.search_logged_models(experiment_ids=[exp], filter_string=f"name = '{name}'",
                                           page_token=token)
        out += [m for m in page if m.source_run_id == run_id]
        token = page.token
        if not token:
            return out


def mark_killed(run_id: str, reason: str) -> None:
    """End a run whose process is gone: KILLED, with ``emoexp.stop_reason=killed`` and why."""
    from mlflow import MlflowClient

    client = MlflowClient()
    client.set_tag(run_id, TAG_STOP_REASON, "killed")
    client.set_tag(run_id, TAG_KILLED_WHY, reason[:5000])
    client.set_terminated(run_id, "KILLED")


def _end_with_error(tracker: MlflowTracker, status: str) -> None:
    import mlflow

    try:
        tracker.log_text(traceback.format_exc(), ART_ERROR)
    except Exception:  # the store itself may be the problem; the status matters more
        log.exception("could not log the traceback")
    mlflow.end_run(status)


def local_run_dir(run_id: str | None, output_dir: str = "") -> Path:
    """Where a run stages its checkpoints before they go to the artifact store: ``output_dir`` if
    given, else ``.emoexp/runs/<run id>``; an untracked run (no run id) keeps its files beside
    them in a new ``.emoexp/runs/untracked-<time>-<random>`` (the folder is the caller's to make)."""
    if output_dir:
        return Path(output_dir)
    if run_id:
        return Path(".emoexp") / "runs" / run_id
    return Path(".emoexp") / "runs" / f"untracked-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
