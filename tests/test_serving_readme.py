"""The requests the README shows, over HTTP, against `mlflow models serve`.

One tiny model per registered model name the README serves, served side by side (one start of
each server, in parallel); `emoexp-face`, `emoexp-speech` and `emoexp-eeg-encoder` have their
servers in test_face.py, test_speech.py (both slow) and test_serving.py. The requests take the shapes the
README states, and the README is checked to state them (so the two cannot drift apart);
rejected requests answer 400 with the reason first and without the input.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from emoexp.data.registry import get_dataset, synthesize
from emoexp.tasks import get_task

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()

# task -> (generator options over the format's tiny ones, config overrides): one epoch in seconds
MODELS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "emoexp-eeg": ("finetune_eav", {"subjects": 3, "n_samples": 1000},
                   {"window_size": 128, "stride": 128, "latent_dim": 16, "use_audio": True}),
    "emoexp-eeg-llm": ("train_eeg_llm", {"subjects": 3, "trials": 4, "seconds": 3},
                       {"window_size": 64, "overlap": 0, "downsample": 8, "lora_r": 2, "freeze_epochs": 0}),
    "emoexp-posture": ("train_posture", {"n_per_side": "train:8,val:4"},
                       {"seq_length": 12, "tcn_channels": 8, "lstm_hidden": 8}),
    "emoexp-classifier": ("train_classifier", {"n": 40}, {"hidden": "8"}),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory, model_servers):
    """name -> (base URL, checkpoint info) of each tiny model, all served at once."""
    import torch

    from emoexp import engine
    from emoexp.config import apply_overrides
    from emoexp.serving import EmoexpModel

    root = tmp_path_factory.mktemp("readme-serving")
    torch.set_num_threads(1)
    uris, infos = {}, {}
    for name, (task_name, synth_options, overrides) in MODELS.items():
        task = get_task(task_name)
        cfg = task.default_config()
        dataset = overrides.get("dataset") or cfg.to_dict().get("dataset") or task.dataset
        opts = {**get_dataset(dataset).tiny, **synth_options}
        data_dir = synthesize(dataset, root / name, subjects=opts.pop("subjects", 1), seed=0, **opts)
        cfg = apply_overrides(cfg, {
            "data_dir": str(data_dir), "epochs": 1, "batch_size": 8, "device": "cpu", "checkpoint_every": 0,
            "log_model": True, "experiment_name": "readme-serving", "output_dir": str(root / f"{name}-run"),
            **overrides,
        })
        uris[name] = f"runs:/{engine.fit(task, cfg).run_id}/model"
        infos[name] = EmoexpModel.from_uri(uris[name]).info
    with model_servers([(uris[n], root / f"{n}.log") for n in MODELS], timeout=90.0 * len(MODELS)) as urls:
        yield {n: (url, infos[n]) for n, url in zip(MODELS, urls)}


def _post(url: str, body: dict) -> tuple[int, Any]:
    req = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _noise(*shape: int, scale: float = 1.0) -> list:
    return (scale * np.random.default_rng(0).standard_normal(shape)).astype(np.float32).tolist()


def _requests(name: str, info: dict) -> list[tuple[str, dict, int]]:
    """(what the README says, the request, rows expected back) for model ``name``."""
    if name in ("emoexp-eeg", "emoexp-eeg-encoder"):
        from emoexp.tasks.eeg import audio_samples

        c, t = info["n_channels"], info["window_size"]
        out = [("raw EEG windows (B, 30, window_size)", {"eeg": _noise(2, c, t)}, 2)]
        if name == "emoexp-eeg":
            cfg = get_task("finetune_eav").default_config()
            n = audio_samples(cfg, info)
            # the README's numbers are the defaults': 512 samples at 250 Hz -> 2.048 s at 16 kHz
            readme_n = audio_samples(cfg, {"window_size": cfg.window_size, "sample_rate": cfg.sample_rate})
            out += [(f"...{readme_n} samples at 16 kHz...", {"eeg": _noise(1, c, t), "audio": _noise(1, n, scale=0.1)}, 1),
                    ("an EEG-only request", {"eeg": _noise(1, c, t)}, 1),
                    ("(all zeros, or no `audio`", {"eeg": _noise(2, c, t), "audio": np.zeros((2, n)).tolist()}, 2)]
        return out
    if name == "emoexp-eeg-llm":
        c, t = info["n_channels"], info["window_size"]
        return [("one\n(32, window_size) window", {"eeg": _noise(c, t)}, 1),
                ("or a (B, 32, window_size) batch", {"eeg": _noise(3, c, t)}, 3)]
    if name == "emoexp-face":
        img = np.random.default_rng(0).integers(0, 255, (48, 48, 3)).tolist()
        return [('{"inputs": {"image": [[[128, 120, 110], ...48 pixels...], ...48 rows...]}}', {"image": img}, 1),
                ("batch (B, H, W, 3); any size", {"image": [img, img]}, 2)]
    if name == "emoexp-speech":
        wave = _noise(48000, scale=0.1)
        return [('"sample_rate": [16000]}}', {"waveform": [wave], "sample_rate": [16000]}, 1),
                ("one waveform or a batch, any length", {"waveform": [wave, wave[:20000]], "sample_rate": [16000, 8000]}, 2)]
    if name == "emoexp-posture":
        f = info["n_features"]
        return [('{"inputs": {"sequence": [[f0, ..., f14], ...T frames...]}}', {"sequence": _noise(20, f)}, 1),
                ("or a (B, T, 15) batch", {"sequence": _noise(2, 20, f)}, 2),
                ("sequences of different lengths", {"sequence": [_noise(20, f), _noise(9, f)]}, 2)]
    if name == "emoexp-classifier":
        return [('`emoexp-classifier` takes `{"features": (B, F)}`', {"features": _noise(3, info["n_features"])}, 3)]
    raise AssertionError(name)


@pytest.mark.parametrize("name", list(MODELS))
def test_readme_requests_are_answered(served, name):
    url, info = served[name]
    classes = next(iter(info["heads"].values()))
    assert f"`{name}`" in README, f"the README does not say how to call {name}"
    for said, inputs, rows in _requests(name, info):
        if not said.startswith("an EEG-only") and "different lengths" not in said:
            assert said in README, f"README no longer says {said!r} for {name}"
        status, body = _post(url, {"inputs": inputs})
        assert status == 200, (said, body)
        preds = body["predictions"]
        assert len(preds) == rows and all(p["label"] in classes for p in preds), (said, preds)
        assert abs(sum(preds[0][f"prob_{c}"] for c in classes) - 1.0) < 1e-5


def _rejected(url: str, inputs: dict, reason: str) -> str:
    status, body = _post(url, {"inputs": inputs})
    assert status == 400, body
    message = body["message"]
    assert message.split(":")[0].startswith(("finetune_eav", "train_", "pretrain_")), message
    assert reason in message.splitlines()[0], message
    assert len(message) < 400 and "Failed to predict data" not in message, message
    return message


def test_rejected_requests_say_why_first_without_the_input(served):
    url, info = served["emoexp-eeg"]
    c, t = info["n_channels"], info["window_size"]
    # the README's old mistake: a quarter of the audio the window spans
    _rejected(url, {"eeg": _noise(1, c, t), "audio": _noise(1, 2048, scale=0.1)}, "audio must be (B, ")
    _rejected(url, {"audio": _noise(1, 2048)}, "input needs 'eeg'")
    _rejected(url, {"eeg": _noise(1, c + 1, t)}, f"eeg must be (B, {c}, T)")
    _rejected(url, {"eeg": [[["x"] * t] * c]}, "eeg: not a regular array of numbers")
    # rows of different lengths: MLflow's own parsing refuses them, as briefly
    status, body = _post(url, {"inputs": {"eeg": [[0.0] * t, [0.0] * (t - 1)]}})
    assert status == 400 and "inhomogeneous" in body["message"] and len(body["message"]) < 400, body
    url, info = served["emoexp-posture"]
    _rejected(url, {"sequence": [1.0, 2.0]}, "sequence")
    url, info = served["emoexp-eeg-llm"]
    _rejected(url, {"eeg": _noise(1, info["n_channels"], info["window_size"] + 1)}, "eeg must be (")


def test_schema_names_the_inputs_and_marks_missing_modalities_optional(served):
    """An EEG+audio model's signature: column specs, none required by MLflow (the task checks)."""
    import mlflow
    from mlflow.models import Model

    from emoexp.serving import input_shapes

    url, info = served["emoexp-eeg"]
    run = mlflow.search_runs(experiment_names=["readme-serving"], filter_string="tags.`emoexp.task` = 'finetune_eav'",
                             output_format="list")[0]
    local = mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/model")
    meta = Model.load(local)
    specs = {s.name: s for s in meta.get_input_schema().inputs}
    assert set(specs) == {"eeg", "audio"} and not any(s.required for s in specs.values())
    shapes = input_shapes(meta)
    assert shapes["eeg"] == (-1, info["n_channels"], info["window_size"]) and shapes["audio"][0] == -1
    example = meta.load_input_example(local)
    assert set(example) == {"eeg", "audio"}
