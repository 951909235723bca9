"""The command line's bad-input contract, per command: a user error (unknown benchmark, command or config key, a bad
option value, a missing or unreadable file or folder) is ONE line on stderr naming it and what is expected, exit
code 2; `--debug` / VAMBA_DEBUG=1 re-raise it with its traceback; any other exception (a bug) is never swallowed.
Run in-process through `vamba.cli.run`, the console script's entry point (`vamba train` exits from inside Hydra).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FIXTURES

from vamba import cli
from vamba.config import compose
from vamba.modeling.errors import UsageError
from vamba.modeling.tiny import tiny_vamba_config


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.setenv("VAMBA_DEBUG", "0")  # restored afterwards, also where `--debug` sets it


def fails(capsys, *argv: str) -> str:
    """Run `vamba <argv>`: it must exit with code 2 after one line on stderr, which is returned."""
    try:
        code = cli.run(list(argv))
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, (code, err)
    return err[0]


def test_unknown_command_and_help(capsys):
    assert fails(capsys, "evaluate") == ("vamba: error: unknown command 'evaluate'; expected one of: convert, export, "
                                         "train, eval, chat, bench, distill-teacher (see `vamba --help`)")
    assert cli.run(["--help"]) == 0 and "Commands:" in capsys.readouterr().out


def test_eval(capsys, tmp_path):
    line = fails(capsys, "eval", "benchmark=nonexistent")
    assert line.startswith("vamba eval: error: unknown benchmark 'nonexistent'; known benchmarks: ")
    assert line.endswith(", houreval, hourvideo, longvideobench, lvbench, mlvu, mvbench, nextqa, synthetic, videomme")
    assert fails(capsys, "eval", "benchmark=nextqa", f"data_dir={tmp_path / 'absent'}", "dry_run=true") == (
        f"vamba eval: error: data_dir={tmp_path / 'absent'}: no such folder (expected nextqa's data folder)")
    assert fails(capsys, "eval", "benchmark=nextqa", "frames.count=abc") == ("vamba eval: error: Value 'abc' of type "
                                                                             "'str' could not be converted to Integer "
                                                                             "(see `vamba eval --help`)")
    assert fails(capsys, "eval", "protocol=bogus").endswith("Invalid value 'bogus', expected one of [official, "
                                                            "release] (see `vamba eval --help`)")
    assert "Key 'frame' not in 'EvalConfig'" in fails(capsys, "eval", "frame.count=8")
    # Hydra's `+` adds a key even to a struct config; one the schema lacks would compose and then be ignored
    assert fails(capsys, "eval", "+frame.count=8") == ("vamba eval: error: unknown config key 'frame': Key 'frame' not "
                                                      "in 'EvalConfig' (`+key=value` cannot add a key the eval schema "
                                                      "lacks)")
    assert "unknown config key 'model.bar'" in fails(capsys, "eval", "+model.bar=1")
    line = fails(capsys, "eval", "benchmark=nextqa", f"data_dir={FIXTURES / 'nextqa'}", f"model.path={tmp_path}",
                 f"output_dir={tmp_path / 'out'}")
    assert line == (f"vamba eval: error: model.path={tmp_path}: no config.json in that folder (expected a checkpoint "
                    f"folder with config.json)")


def test_debug_and_bugs_keep_the_traceback(capsys, monkeypatch):
    with pytest.raises(UsageError, match="unknown benchmark"):
        cli.run(["eval", "benchmark=nonexistent", "--debug"])
    monkeypatch.setenv("VAMBA_DEBUG", "1")
    with pytest.raises(UsageError, match="unknown benchmark"):
        cli.run(["eval", "benchmark=nonexistent"])
    monkeypatch.setenv("VAMBA_DEBUG", "0")

    def bug(argv):
        return {}["missing"]

    monkeypatch.setitem(cli.COMMANDS, "eval", bug)
    with pytest.raises(KeyError):  # not a user error: never reduced to one line
        cli.run(["eval"])
    assert capsys.readouterr().err == ""


def test_train(capsys, tmp_path):
    assert fails(capsys, "train", "train.learning_rate=fast").endswith("Value 'fast' of type 'str' could not be "
                                                                       "converted to Float (see `vamba train --help`)")
    assert "Key 'lr' not in 'StageConfig'" in fails(capsys, "train", "train.lr=1e-4")
    assert "unknown config key 'train.lr'" in fails(capsys, "train", "+train.lr=1e-4")
    assert "unknown config key 'train.lr'" in fails(capsys, "train", "--multirun", f"hydra.sweep.dir={tmp_path}",
                                                    "+train.lr=1e-4")  # caught in the app: multirun skips the pre-check
    # where the schema holds a free-form dict, `+` still adds to it
    cfg = compose("train", ["+model.flavor_overrides.num_hidden_layers=3"])
    assert cfg.model.flavor_overrides.num_hidden_layers == 3
    assert fails(capsys, "train", f"model.path={tmp_path / 'none'}", f"output_dir={tmp_path / 'out'}") == (
        f"vamba train: error: model.path={tmp_path / 'none'}: no such folder (expected a checkpoint folder with "
        f"config.json, or a Hugging Face model id)")


def test_chat(capsys, tmp_path):
    assert fails(capsys, "chat", "hi", "--model", str(tmp_path), "--video", "v.mp4", "--frames", "many") == (
        "vamba chat: error: argument --frames: invalid int value: 'many' (see `vamba chat --help`)")
    assert fails(capsys, "chat", "hi", "--model", str(tmp_path / "none"), "--video", "v.mp4").endswith(
        f"{tmp_path / 'none'}: no such folder (expected a checkpoint folder with config.json)")


def test_convert_and_export(capsys, tmp_path):
    assert fails(capsys, "convert", "--base", str(tmp_path / "none"), "--out", str(tmp_path / "o")) == (
        f"vamba convert: error: {tmp_path / 'none'}: no config.json, not a Qwen2-VL checkpoint directory")
    line = fails(capsys, "export", "--model", str(tmp_path), "--out", str(tmp_path / "o"), "--format", "hf")
    assert line.startswith("vamba export: error: argument --format: invalid choice: 'hf' (choose from ")
    assert line.endswith(" (see `vamba export --help`)")
    broken = tmp_path / "broken"
    tiny_vamba_config().save_pretrained(broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)  # a truncated download
    assert fails(capsys, "export", "--model", str(broken), "--out", str(tmp_path / "o")).startswith(
        f"vamba export: error: {broken}: cannot read the checkpoint's weights (")
    assert not (tmp_path / "o").exists()


def test_bench(capsys, tmp_path):
    assert fails(capsys, "bench", "--frames", "3", "--flops-only", "--out", str(tmp_path)) == (
        "vamba bench: error: frames must be a positive multiple of the temporal patch size 2, got 3")
    assert fails(capsys, "bench", "--context-parallel", "--gpus", "x", "--out", str(tmp_path)).startswith(
        "vamba bench: error: argument --gpus: invalid int value: 'x'")


def test_distill_teacher(capsys, tmp_path: Path):
    assert fails(capsys, "distill-teacher", "--out", str(tmp_path)) == (
        "vamba distill-teacher: error: the following arguments are required: --teacher "
        "(see `vamba distill-teacher --help`)")
    assert fails(capsys, "distill-teacher", "--teacher", "./none", "--out", str(tmp_path)) == (
        "vamba distill-teacher: error: --teacher=./none: no such folder (expected a checkpoint folder with "
        "config.json, or a Hugging Face model id)")
