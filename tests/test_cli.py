"""Command-line safety: one-line user errors with exit status 2, outputs checked before the work, outputs and
checkpoints never half-written, existing checkpoints kept unless ``--overwrite``.

The CLIs run in-process: ``main(argv)``, or ``runpy`` as ``python -m`` would (``__main__`` block included) without a
new interpreter.
"""
import json
import os
import runpy
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from vidrd_jax import checkpoints, cli, export, make_tiny_checkpoint
from vidrd_jax.convert import __main__ as convert_cli


def run_module(monkeypatch, module: str, *args: str) -> int:
    """``python -m module args`` in this process; returns the exit status."""
    monkeypatch.setattr(sys, "argv", [module, *args])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module(module, run_name="__main__")
    return exit_info.value.code


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def unwritable_dir(tmp_path: Path) -> str:
    """A directory no file can be created in (root writes anywhere its permission bits forbid: use sysfs)."""
    if os.geteuid() != 0:
        tmp_path.chmod(0o555)
        return str(tmp_path)
    with pytest.raises(OSError):  # the premise of the tests that use it
        tempfile.TemporaryFile(dir="/sys")
    return "/sys"


def tree(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (relative path -> bytes)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


# --- the helpers -------------------------------------------------------------------------------------------------

def test_run_cli_reports_user_errors_in_one_line_and_keeps_bug_tracebacks(capsys, monkeypatch):
    def raising(error):
        def main(argv):
            raise error
        return main

    user_errors = [cli.UsageError("--out: bad\n  value"), FileNotFoundError(2, "No such file or directory", "x.json"),
                   PermissionError(13, "Permission denied", "/root/x"), ValueError("config.seed must be an int")]
    for error in user_errors:
        assert cli.run_cli(raising(error), []) == 2
        assert one_error_line(capsys) == f"error: {' '.join(str(error).split())}"
    assert cli.run_cli(raising(SystemExit("error: --stage 'x' is not a stage")), []) == 2
    assert one_error_line(capsys) == "error: --stage 'x' is not a stage"
    with pytest.raises(RuntimeError, match="a bug"):
        cli.run_cli(raising(RuntimeError("a bug")), [])
    assert cli.run_cli(raising(RuntimeError("named")), [], errors=(RuntimeError,)) == 2
    assert one_error_line(capsys) == "error: named"
    assert cli.run_cli(raising(SystemExit(0)), []) == 0 and cli.run_cli(raising(SystemExit(None)), []) == 0
    assert cli.run_cli(lambda argv: {"records": 3}, []) == 0 and cli.run_cli(lambda argv: 3, []) == 3
    monkeypatch.setenv(cli.TRACEBACK_ENV, "1")  # debugging: a ValueError that is a bug keeps its traceback
    with pytest.raises(ValueError, match="config.seed"):
        cli.run_cli(raising(user_errors[-1]), [])


def test_atomic_files_keep_earlier_outputs_when_interrupted(tmp_path):
    old = {"video.mp4": b"old video", "video.json": b'{"old": true}'}
    for name, data in old.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(KeyboardInterrupt):
        with cli.AtomicFiles() as files:
            for name in old:
                tmp = files.path(tmp_path / name)
                assert Path(tmp).parent == tmp_path and tmp.endswith(Path(name).suffix)
                Path(tmp).write_bytes(b"partial")
            raise KeyboardInterrupt
    assert tree(tmp_path) == old  # byte-identical, no temporary file left
    with cli.AtomicFiles() as files:
        for name in old:
            Path(files.path(tmp_path / name)).write_bytes(b"new " + name.encode())
    assert tree(tmp_path) == {name: b"new " + name.encode() for name in old}
    with pytest.raises(FileNotFoundError):  # a file that was never written is an error, not a silent gap
        with cli.AtomicFiles() as files:
            files.path(tmp_path / "never_written.png")
    with pytest.raises(RuntimeError):
        with cli.atomic_write(tmp_path / "video.json") as f:
            f.write("partial")
            raise RuntimeError("crash mid-run")
    assert (tmp_path / "video.json").read_bytes() == b"new video.json"
    with cli.atomic_write(tmp_path / "video.json") as f:
        f.write("done")
    assert (tmp_path / "video.json").read_text() == "done" and sorted(tree(tmp_path)) == sorted(old)


def test_atomic_directory_replaces_a_directory_only_when_complete(tmp_path):
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "model_config.json").write_text("old")
    with pytest.raises(OSError, match="disk full"):
        with cli.atomic_directory(str(out)) as tmp:
            assert Path(tmp).parent == tmp_path and Path(tmp) != out
            (Path(tmp) / "model_config.json").write_text("half")
            raise OSError("disk full")
    assert tree(tmp_path) == {"ckpt/model_config.json": b"old"} and os.listdir(tmp_path) == ["ckpt"]
    with cli.atomic_directory(str(out)) as tmp:
        (Path(tmp) / "params").mkdir()
        (Path(tmp) / "params" / "x").write_text("new")
    assert tree(tmp_path) == {"ckpt/params/x": b"new"} and os.listdir(tmp_path) == ["ckpt"]
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # what mkdir gives, not mkdtemp's private 0700
    with cli.atomic_directory(str(tmp_path / "new" / "ckpt")) as tmp:
        (Path(tmp) / "f").write_text("x")
    assert (tmp_path / "new" / "ckpt" / "f").read_text() == "x"


def test_output_checks_name_the_problem(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(cli.UsageError, match=r"--out: cannot write .*: '.*a_file' is not a directory"):
        cli.check_output_file(str(tmp_path / "a_file" / "deeper" / "v.mp4"))
    with pytest.raises(cli.UsageError, match="--out: '.*' is a directory"):
        cli.check_output_file(str(tmp_path))
    cli.check_output_file(str(tmp_path / "a_file"))  # an existing file is replaced on success
    cli.check_output_file(str(tmp_path / "new" / "dirs" / "v.mp4"))  # created when written
    assert os.listdir(tmp_path) == ["a_file"]  # checking creates nothing
    (tmp_path / "read_only").mkdir()
    with pytest.raises(cli.UsageError, match="--json: cannot write .* is not writable"):
        cli.check_output_file(os.path.join(unwritable_dir(tmp_path / "read_only"), "c.json"), "--json")


def test_output_dir_check_refuses_existing_checkpoints(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    cli.check_output_dir(str(ckpt))  # empty: fine
    (ckpt / "model_config.json").write_text("{}")
    with pytest.raises(cli.UsageError, match="already exists and is not empty; pass --overwrite"):
        cli.check_output_dir(str(ckpt))
    cli.check_output_dir(str(ckpt), overwrite=True)
    with pytest.raises(cli.UsageError, match="exists and is not a directory"):
        cli.check_output_dir(str(ckpt / "model_config.json"), overwrite=True)
    cli.check_output_dir("gs://bucket/ckpt")  # URLs are not checked


# --- make_tiny_checkpoint, convert, export -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "ckpt"
    assert make_tiny_checkpoint.main(["--out", str(out), "--seed", "0"]) == 0
    return out


def test_make_tiny_checkpoint_refuses_to_overwrite_and_replaces_atomically(tiny, tmp_path, capsys, monkeypatch):
    out = tmp_path / "ckpt"
    shutil.copytree(tiny, out)
    before = tree(out)
    assert make_tiny_checkpoint.main(["--out", str(out), "--seed", "1"]) == 2
    assert "--out" in (line := one_error_line(capsys)) and "pass --overwrite" in line
    assert tree(out) == before

    def half_save(directory, params, model_config):
        Path(directory, "model_config.json").write_text("{}")
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as mp:
        mp.setattr(checkpoints, "save_inference_checkpoint", half_save)
        assert make_tiny_checkpoint.main(["--out", str(out), "--seed", "1", "--overwrite"]) == 2
    assert "No space left on device" in one_error_line(capsys)
    assert tree(out) == before and os.listdir(tmp_path) == ["ckpt"]  # no half checkpoint, no temporary directory
    assert make_tiny_checkpoint.main(["--out", str(out), "--seed", "1", "--overwrite"]) == 0
    assert checkpoints.load_model_config(str(out))["source"].endswith("seed=1")
    assert os.listdir(tmp_path) == ["ckpt"]
    assert make_tiny_checkpoint.main(["--out", str(tmp_path / "ckpt" / "model_config.json")]) == 2
    assert "exists and is not a directory" in one_error_line(capsys)


def test_convert_checks_out_before_converting_and_writes_atomically(tiny, tmp_path, capsys, monkeypatch):
    calls = []
    params, model_config = checkpoints.load_inference_checkpoint(str(tiny))

    def fake_convert(folder, **kwargs):  # stands in for reading an SD folder (test_convert covers that)
        calls.append(folder)
        return params, dict(model_config, source="converted")

    monkeypatch.setattr(convert_cli, "convert_sd_folder", fake_convert)
    (tmp_path / "a_file").write_text("x")
    assert convert_cli.main(["sd", "--folder", "sd", "--out", str(tmp_path / "a_file")]) == 2
    assert "--out" in one_error_line(capsys) and calls == []
    assert convert_cli.main(["sd", "--folder", "sd", "--out", str(tmp_path / "a_file" / "ckpt")]) == 2
    assert "is not a directory" in one_error_line(capsys) and calls == []
    out = tmp_path / "ckpt"
    shutil.copytree(tiny, out)
    before = tree(out)
    assert convert_cli.main(["sd", "--folder", "sd", "--out", str(out)]) == 2
    assert "pass --overwrite" in one_error_line(capsys) and calls == [] and tree(out) == before

    def interrupted_save(directory, params, model_config):
        Path(directory, "params").mkdir()
        raise KeyboardInterrupt

    with monkeypatch.context() as mp:
        mp.setattr(checkpoints, "save_inference_checkpoint", interrupted_save)
        with pytest.raises(KeyboardInterrupt):
            convert_cli.main(["sd", "--folder", "sd", "--out", str(out), "--overwrite"])
    assert tree(out) == before and sorted(os.listdir(tmp_path)) == ["a_file", "ckpt"]
    assert convert_cli.main(["sd", "--folder", "sd", "--out", str(out), "--overwrite"]) == 0
    assert checkpoints.load_model_config(str(out))["source"] == "converted" and len(calls) == 2
    assert sorted(os.listdir(tmp_path)) == ["a_file", "ckpt"]


@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")
def test_export_refuses_existing_out_first_and_reports_errors_in_one_line(tiny, tmp_path, capsys, monkeypatch):
    missing = str(tmp_path / "no_workdir")
    with pytest.raises(cli.UsageError, match="pass --overwrite"):  # before the workdir is even looked at
        export.main(["--workdir", missing, "--out", str(tiny)])
    assert run_module(monkeypatch, "vidrd_jax.export", "--workdir", missing, "--out", str(tmp_path / "o")) == 2
    assert "no_workdir" in one_error_line(capsys) and not (tmp_path / "o").exists()
    assert run_module(monkeypatch, "vidrd_jax.export", "--help") == 0
    assert "--overwrite" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")
def test_summary_cli_help_exits_0_and_bad_config_is_one_line(tiny, tmp_path, capsys, monkeypatch):
    assert run_module(monkeypatch, "vidrd_jax.models.summary", "--help") == 0
    assert "--config" in capsys.readouterr().out
    assert run_module(monkeypatch, "vidrd_jax.models.summary", "--config", str(tmp_path / "nothing")) == 2
    assert "neither a preset" in one_error_line(capsys)
    (tmp_path / "model_config.json").write_text(json.dumps({"unet": {"no_such_field": 1}}))
    assert run_module(monkeypatch, "vidrd_jax.models.summary", "--config", str(tmp_path / "model_config.json")) == 2
    assert "no model config for ['vae', 'text_encoder']" in one_error_line(capsys)
    counts_file = tmp_path / "counts.json"
    assert run_module(monkeypatch, "vidrd_jax.models.summary", "--config", str(tiny), "--json", str(counts_file)) == 0
    assert json.loads(counts_file.read_text())["total"] > 0
