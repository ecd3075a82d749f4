"""Typed configs: checked overrides, weight strings, presets."""

from __future__ import annotations

import pytest

from emoexp.config import (
    ConfigError,
    apply_overrides,
    format_weights,
    load_preset,
    parse_pairs,
    parse_weights,
)
from emoexp.tasks.eeg import FinetuneEavConfig

EAV = ["neutral", "sadness", "anger", "happiness", "calmness"]


def test_overrides_are_coerced_from_strings():
    cfg = apply_overrides(FinetuneEavConfig(), {"epochs": "4", "use_audio": "true", "lr": "5e-5"})
    assert cfg.epochs == 4 and cfg.use_audio is True and cfg.lr == 5e-5


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"epoch": 3}, "unknown option 'epoch'.*did you mean epochs"),
        ({"epochs": "three"}, "epochs: expected an integer"),
        ({"epochs": "2.5"}, "epochs: expected an integer"),
        ({"use_audio": "maybe"}, "use_audio: expected true or false"),
        ({"condition": "singing"}, "condition: 'singing' is not one of"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "must be < 1"),
        ({"epochs": 0}, "epochs must be >= 1"),
    ],
)
def test_bad_overrides_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        apply_overrides(FinetuneEavConfig(), overrides)


def test_weights_fill_unnamed_classes_and_accept_prefixes():
    w = parse_weights("sad=5, happiness=0.5", EAV)
    assert w == {"neutral": 1.0, "sadness": 5.0, "anger": 1.0, "happiness": 0.5, "calmness": 1.0}
    assert parse_weights("", EAV) == dict.fromkeys(EAV, 1.0)
    assert format_weights(w).startswith("neutral=1,sadness=5")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("joy=2", "'joy' is not a class; classes are neutral, sadness"),
        ("sadness", "should look like class=number"),
        ("sadness=-1", "must be a finite number >= 0"),
        ("sadness=lots", "is not a number"),
        ("neutral=0,sadness=0,anger=0,happiness=0,calmness=0", "at least one class"),
    ],
)
def test_bad_weights_are_clear(spec, match):
    with pytest.raises(ConfigError, match=match):
        parse_weights(spec, EAV)


def test_ambiguous_prefix_is_an_error():
    with pytest.raises(ConfigError, match="ambiguous"):
        parse_weights("a=2", ["anger", "amusement"])


def test_pairs_from_a_string_split_at_any_separator():
    assert parse_pairs(" lr = 0.1 ;; epochs=3;", sep=";", what="--options") == {"lr": "0.1", "epochs": "3"}
    assert parse_pairs("a=1,b=2;c=", sep=",;", what="weights") == {"a": "1", "b": "2", "c": ""}
    assert parse_pairs("", sep=";", what="--options") == {}
    assert parse_pairs("x=a=b", sep=";", what="--options") == {"x": "a=b"}   # the first = splits


def test_pairs_from_repeated_options_keep_separators_in_values():
    sets = ("segments=neutral:2,happy:2", "description=a; b", "seconds=10", "seconds=12")
    assert parse_pairs(sets, what="--set") == {"segments": "neutral:2,happy:2",
                                               "description": "a; b", "seconds": "12"}  # later wins
    assert parse_pairs((), what="--set") == {}


@pytest.mark.parametrize(
    ("given", "sep", "match"),
    [
        ("lr=0.1;epochs", ";", r"--options: 'epochs' should look like key=value"),
        ("lr=0.1; =3", ";", r"--options: '=3' should look like key=value"),
        (["dataset=fer2013", "fer2013"], "", r"--options: 'fer2013' should look like key=value"),
    ],
)
def test_a_bad_pair_is_named(given, sep, match):
    with pytest.raises(ConfigError, match=match):
        parse_pairs(given, sep=sep, what="--options")


def test_the_cli_parses_every_key_value_option_with_parse_pairs(tmp_path):
    from click.testing import CliRunner

    from emoexp.cli import main

    for args in (["resume", "runs:/x/checkpoints/best.pt", "--set", "oops"],
                 ["data", "synth", "faced", "--out", str(tmp_path / "f"), "--set", "oops"],
                 ["evaluate", "runs:/x/model", "--data", str(tmp_path), "--set", "oops"]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 1, (args, res.output)
        assert "--set: 'oops' should look like KEY=VALUE" in res.output, (args, res.output)
    assert not (tmp_path / "f").exists()
    res = CliRunner().invoke(main, ["sweep", "train_face", "--options", "epochs=1;oops"])
    assert res.exit_code == 1 and "--options: 'oops' should look like key=value" in res.output, res.output


def test_preset_files(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("# emoexp train finetune_eav --preset x.yaml\ntask: finetune_eav\nweights: sadness=5\n")
    assert load_preset(p) == {"task": "finetune_eav", "weights": "sadness=5"}
    (tmp_path / "bad.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_preset(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_preset(tmp_path / "missing.yaml")


def test_shipped_presets_are_valid():
    """Every experiment preset names a task, and its keys are that task's options."""
    from pathlib import Path

    from emoexp.tasks import get_task

    presets = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml"))
    assert presets
    for p in presets:
        data = load_preset(p)
        assert p.read_text().startswith("# emoexp "), f"{p.name}: line 1 should be the command"
        task = get_task(data.pop("task"))
        apply_overrides(task.default_config(), data)
