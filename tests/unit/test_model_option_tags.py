"""CreateModel's ``lvkit:option:NAME`` tags: a model's own options through the unchanged wire, and
the server's local-files rule for the options that name files (a client must not make the server
read its files)."""

from __future__ import annotations

import os

import pytest

import lvkit
from lvkit.training_jobs import OPTION_TAG, option_value, options_from_tags


def test_option_tags_become_model_kwargs_read_as_json_where_they_parse():
    options = options_from_tags({"lvkit:model": "padim", f"{OPTION_TAG}n_features": "20",
                                 f"{OPTION_TAG}note": "not json", "team": "vision"})
    assert options.trainer.model_kwargs == {"n_features": 20, "note": "not json"}  # other tags are not options
    assert option_value("x", '{"a": [1, 2]}') == {"a": [1, 2]} and option_value("x", "") == ""
    assert option_value("teacher_weights", "100") == "100"  # a file's name is never a number
    for text in ("NaN", "Infinity", "1e999", "-1e999"):
        with pytest.raises(lvkit.ValidationException, match="is not a finite number"):
            option_value("lr", text)


def test_an_empty_option_name_is_an_unknown_tag():
    with pytest.raises(lvkit.ValidationException, match=r"unknown lvkit tag 'lvkit:option:'.*lvkit:option:NAME"):
        options_from_tags({OPTION_TAG: "1"})


def test_an_option_the_model_does_not_take_is_refused_by_the_check():
    pytest.importorskip("anomalib")
    trainer = options_from_tags({"lvkit:model": "padim", f"{OPTION_TAG}n_featurs": "20"}).trainer
    with pytest.raises(lvkit.ValidationException, match="model 'padim' takes no option 'n_featurs'"):
        trainer.check()
    for name in ("backbone_weights", "pretrained", "weights_dir", "seed"):  # build_model's own: never options
        with pytest.raises(lvkit.ValidationException, match=f"takes no option '{name}'"):
            options_from_tags({"lvkit:model": "padim", f"{OPTION_TAG}{name}": "x"}).trainer.check()
    empty = options_from_tags({"lvkit:model": "efficient_ad", f"{OPTION_TAG}teacher_weights": ""}).trainer
    with pytest.raises(lvkit.ValidationException, match="teacher_weights names a file or folder: it cannot be empty"):
        empty.check()


def test_relative_file_options_are_checked_and_trained_as_the_same_absolute_path(tmp_path, monkeypatch):
    """The server checks a path against its own folder; the training process starts in another, so it
    must get the checked path itself, absolute (a relative '../' escaped --local-files this way)."""
    allowed = tmp_path / "allowed"
    (allowed / "a" / "b").mkdir(parents=True)
    (allowed / "t.pth").write_bytes(b"x")
    monkeypatch.chdir(allowed / "a" / "b")
    tag = f"{OPTION_TAG}teacher_weights"
    kept = options_from_tags({"lvkit:model": "efficient_ad", tag: "../../t.pth"}, local_files=allowed)
    assert kept.trainer.model_kwargs["teacher_weights"] == str((allowed / "t.pth").resolve())
    with pytest.raises(lvkit.ValidationException, match="outside the folder"):
        options_from_tags({"lvkit:model": "efficient_ad", tag: "../../../secret.pth"}, local_files=allowed)
    # in process (lvkit.train, the CLI) any path is read, made absolute against the caller's folder
    from lvkit.backends.anomalib.train import AnomalibTrainer

    trainer = AnomalibTrainer(model="efficient_ad", image_size=256, model_kwargs={"teacher_weights": "../t.pth",
                                                                                   "imagenet_dir": "~/imagenette"})
    kwargs = trainer._model_kwargs(20)
    assert kwargs["teacher_weights"] == str((allowed / "a" / "t.pth").resolve())
    assert kwargs["imagenet_dir"] == os.path.realpath(os.path.expanduser("~/imagenette"))


def test_file_options_follow_the_local_files_rule(tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    teacher = allowed / "teacher.pth"
    teacher.write_bytes(b"x")
    outside = tmp_path / "secret.pth"
    outside.write_bytes(b"x")
    (allowed / "escape.pth").symlink_to(outside)
    tag = f"{OPTION_TAG}teacher_weights"
    base = {"lvkit:model": "efficient_ad"}
    assert options_from_tags({**base, tag: str(outside)}).trainer.model_kwargs == {"teacher_weights": str(outside)}
    with pytest.raises(lvkit.ValidationException, match="reads none: start lvkit serve with --local-files DIR"):
        options_from_tags({**base, tag: str(teacher)}, local_files=False)
    assert options_from_tags({**base, tag: str(teacher)}, local_files=allowed).trainer.model_kwargs[
        "teacher_weights"] == str(teacher)
    for path in (outside, allowed / "escape.pth", allowed / ".." / "secret.pth"):
        with pytest.raises(lvkit.ValidationException, match="outside the folder this server reads"):
            options_from_tags({**base, tag: str(path)}, local_files=allowed)
    with pytest.raises(lvkit.ValidationException, match="imagenet_dir"):
        options_from_tags({**base, f"{OPTION_TAG}imagenet_dir": os.sep}, local_files=allowed)
    # options that name no file are not paths
    assert options_from_tags({**base, f"{OPTION_TAG}lr": "0.001"}, local_files=False).trainer.model_kwargs == {
        "lr": 0.001}
