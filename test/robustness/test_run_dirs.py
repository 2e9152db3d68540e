"""Run directories: continued or replaced, never clobbered; consistent after a kill at any instant.

Plain `train` into an existing run refuses; `--overwrite` replaces it; `--resume` refuses a
different architecture and applies (not just records) a changed learning rate; damaged
checkpoints are one line naming the file on every path that reads them. The commit protocol of
mtl_training.trainer is checked twice: deterministically, by stopping the process between the
writes of one epoch (last.pt, best.pt, metrics.jsonl), and at random, by a bounded kill -9 loop
of `python -m mtl_training train` subprocesses resumed with `--resume` each time.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mtl_perception.core.artifact import ArtifactError, read_metadata
from mtl_training import trainer as trainer_module
from mtl_training.apps.train_cli import main
from mtl_training.checkpoint import (
    CheckpointError,
    RunDirError,
    load_checkpoint,
    save_checkpoint,
)
from mtl_training.config import ConfigError, ExperimentConfig, load_config
from mtl_training.export import export_run
from mtl_training.pseudo import PseudoLabelError
from mtl_training.pseudo.teacher import file_sha256, load_teacher
from mtl_training.trainer import Trainer, score, train

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "data": {"train_frames": 8, "val_frames": 2, "render_height": 30, "render_width": 40,
             "height": 32, "width": 48},
    "model": {"decoder_channels": 4, "decoder_convs": 1},
    "train": {"epochs": 2, "batch_size": 4, "device": "cpu", "num_threads": 1,
              "montage_frames": 1, "seed": 3},
}


def _yaml(path: Path, **train: object) -> Path:
    values = json.loads(json.dumps(TINY))
    values["train"].update(train)
    path.write_text(json.dumps(values))  # JSON is YAML
    return path


def _cfg(tmp_path: Path, run: str = "run", **train: object) -> ExperimentConfig:
    cfg = load_config(_yaml(tmp_path / f"{run}.yaml", **train))
    cfg.train.out_dir = str(tmp_path / run)
    return cfg


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _consistent(run: Path, epochs: int) -> None:
    """What the protocol promises: each epoch once, in order; best.pt the best of them; last.pt
    at the end."""
    recs = _records(run)
    assert [r["epoch"] for r in recs] == list(range(1, epochs + 1))
    scores = [score(r["val"]) for r in recs]
    best = load_checkpoint(run / "best.pt")
    assert best["best"] == pytest.approx(max(scores))
    assert best["epoch"] == 1 + scores.index(max(scores))
    last = load_checkpoint(run / "last.pt")
    assert last["epoch"] == epochs and not last.get("partial")
    assert [r["epoch"] for r in last["history"]] == list(range(1, epochs + 1))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One finished 2-epoch run, copied by the tests that damage or extend it."""
    base = tmp_path_factory.mktemp("finished")
    return train(_cfg(base))


def _copy_run(src: Path, dst: Path) -> Path:
    """A copy of a run; checkpoints are hard links (the trainer replaces them by rename and the
    tests damage them by unlink + write, so the original is never changed)."""
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.suffix == ".pt":
            os.link(p, dst / p.name)
        elif p.is_file():
            (dst / p.name).write_bytes(p.read_bytes())
    return dst


def _replace(path: Path, data: bytes | None = None, ckpt: dict | None = None) -> None:
    """Write a new file at `path` (a new inode, so a hard-linked original stays intact)."""
    path.unlink()
    if ckpt is not None:
        torch.save(ckpt, path)
    else:
        path.write_bytes(data or b"")


# -- continued or replaced --------------------------------------------------------------------
@pytest.mark.parametrize("present", ["last.pt", "best.pt", "metrics.jsonl", "config.yaml"])
def test_plain_train_into_an_existing_run_refuses(tmp_path, finished_run, capsys, present):
    run = tmp_path / "run"
    run.mkdir()
    os.link(finished_run / present, run / present)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(RunDirError) as err:
        train(_cfg(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg and str(run) in msg and "--resume" in msg and "--overwrite" in msg
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing touched
    rc = main(["train", "--config", str(_yaml(tmp_path / "c.yaml")), "--out", str(run)])
    err_line = capsys.readouterr().err.strip()
    assert rc == 2 and len(err_line.splitlines()) == 1 and "--overwrite" in err_line


def test_overwrite_replaces_the_run(tmp_path, finished_run, capsys):
    run = _copy_run(finished_run, tmp_path / "run")
    rc = main(["train", "--config", str(_yaml(tmp_path / "c.yaml", epochs=1, seed=9)),
               "--out", str(run), "--overwrite"])
    assert rc == 0, capsys.readouterr().err
    assert [r["epoch"] for r in _records(run)] == [1]
    assert load_checkpoint(run / "best.pt")["config"]["train"]["seed"] == 9
    _consistent(run, 1)
    with pytest.raises(SystemExit) as exit_:  # argparse: the two flags exclude each other
        main(["train", "--config", str(tmp_path / "c.yaml"), "--out", str(run), "--overwrite",
              "--resume"])
    assert exit_.value.code == 2


def test_resume_refuses_a_different_architecture_in_one_line(tmp_path, finished_run, capsys):
    run = _copy_run(finished_run, tmp_path / "run")
    before = (run / "config.yaml").read_text()
    cfg = _cfg(tmp_path, epochs=3)
    cfg.model.decoder_channels = 8
    with pytest.raises(ConfigError, match=r"model\.decoder_channels") as err:
        train(cfg, resume=True)
    assert "\n" not in str(err.value) and "last.pt" in str(err.value)
    rc = main(["train", "--config", str(_yaml(tmp_path / "c.yaml", epochs=3)), "--out", str(run),
               "--resume", "--set", "model.decoder_convs=2"])
    err_line = capsys.readouterr().err.strip()
    assert rc == 2 and len(err_line.splitlines()) == 1 and "model.decoder_convs" in err_line
    assert (run / "config.yaml").read_text() == before  # a refused resume records nothing


@pytest.mark.parametrize(("override", "key"), [("loss.weighting=dwa", "loss.weighting"),
                                               ("loss.xtc=true", "loss.xtc"),
                                               ("train.epochs=1", "train.epochs")])
def test_resume_refuses_what_it_could_only_record(tmp_path, finished_run, override, key):
    run = _copy_run(finished_run, tmp_path / "run")
    cfg = load_config(_yaml(tmp_path / "c.yaml"), [override])
    cfg.train.out_dir = str(run)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        train(cfg, resume=True)


def test_resume_with_a_new_lr_trains_at_that_lr(tmp_path, finished_run, capsys):
    run = _copy_run(finished_run, tmp_path / "run")
    cfg = _cfg(tmp_path, epochs=3, lr=0.5)
    trainer = Trainer(cfg, load_pretrained=False)
    assert trainer.resume()
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [0.5]
    rc = main(["train", "--config", str(_yaml(tmp_path / "c.yaml", epochs=3)), "--out", str(run),
               "--resume", "--set", "train.lr=0.5"])
    assert rc == 0, capsys.readouterr().err
    recs = _records(run)
    assert [r["epoch"] for r in recs] == [1, 2, 3]
    assert recs[-1]["lr"] == 0.5 and recs[0]["lr"] == pytest.approx(1e-3)
    assert load_checkpoint(run / "last.pt")["optimizer"]["param_groups"][0]["lr"] == 0.5
    assert load_config(run / "config.yaml").train.lr == 0.5  # recorded = used
    _consistent(run, 3)


def test_resume_without_last_pt_but_with_other_run_files_refuses(tmp_path, finished_run):
    run = _copy_run(finished_run, tmp_path / "run")
    (run / "last.pt").unlink()
    with pytest.raises(RunDirError, match=r"no last\.pt"):
        train(_cfg(tmp_path), resume=True)


# -- damaged checkpoints: one line naming the file, on every path -------------------------------
def _damage(path: Path, kind: str) -> None:
    data = path.read_bytes()
    damaged = {
        "zero": b"",
        "truncated": data[: len(data) // 2],
        "head": data[:100],
        "garbage": random.Random(0).randbytes(4096),
        "text": b"hello, not a checkpoint\n",
        "pickle": pickle.dumps([1, 2, 3], protocol=2),
    }[kind]
    _replace(path, damaged)


DAMAGE = ["zero", "truncated", "head", "garbage", "text", "pickle"]


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_last_pt_on_resume_is_one_line(tmp_path, finished_run, capsys, kind):
    run = _copy_run(finished_run, tmp_path / "run")
    _damage(run / "last.pt", kind)
    with pytest.raises(CheckpointError) as err:
        train(_cfg(tmp_path, epochs=3), resume=True)
    assert "\n" not in str(err.value) and str(run / "last.pt") in str(err.value)
    rc = main(["train", "--config", str(_yaml(tmp_path / "c.yaml", epochs=3)), "--out", str(run),
               "--resume"])
    err_line = capsys.readouterr().err.strip()
    assert rc == 2 and len(err_line.splitlines()) == 1
    assert err_line.startswith("mtl-train train: error: ") and "last.pt" in err_line


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_best_pt_for_export_evaluate_and_teacher_is_one_line(tmp_path, finished_run,
                                                                     capsys, kind):
    run = _copy_run(finished_run, tmp_path / "run")
    _damage(run / "best.pt", kind)
    with pytest.raises(CheckpointError) as err:
        export_run(run, tmp_path / "a.safetensors")
    assert "\n" not in str(err.value) and str(run / "best.pt") in str(err.value)
    for argv in (["export", str(run), "--out", str(tmp_path / "a.safetensors")],
                 ["evaluate", str(run), "--config", str(_yaml(tmp_path / "c.yaml"))]):
        rc = main(argv)
        err_line = capsys.readouterr().err.strip()
        assert rc == 2 and len(err_line.splitlines()) == 1, err_line
        assert err_line.startswith(f"mtl-train {argv[0]}: error: ") and "best.pt" in err_line
    with pytest.raises(PseudoLabelError) as err:  # the pseudo-label teacher reads the same way
        load_teacher(run)
    assert "\n" not in str(err.value) and "best.pt" in str(err.value)


def test_a_checkpoint_whose_weights_do_not_fit_is_one_line(tmp_path, finished_run):
    run = _copy_run(finished_run, tmp_path / "run")
    ckpt = load_checkpoint(run / "best.pt")
    ckpt["model"] = {k: v[:1] if v.ndim else v for k, v in ckpt["model"].items()}
    _replace(run / "best.pt", ckpt=ckpt)
    with pytest.raises(CheckpointError, match="do not fit") as err:
        export_run(run, tmp_path / "a.safetensors")
    assert "\n" not in str(err.value)


# -- the commit protocol, stopped between its writes --------------------------------------------
class Killed(BaseException):
    """Stands in for kill -9: nothing after it runs (not an Exception, so nothing catches it)."""


# the writers the trainer commits an epoch with, and which argument is the file written
WRITERS = {"save_checkpoint": 1, "write_text_atomic": 0}


def _stop_after(monkeypatch, name: str, target: str, nth: int = 1) -> None:
    """Make trainer_module.<name> stop the run right after its nth write of `target`."""
    real = getattr(trainer_module, name)
    seen = {"n": 0}

    def wrapped(*args, **kwargs):
        real(*args, **kwargs)
        if Path(args[WRITERS[name]]).name == target:
            seen["n"] += 1
            if seen["n"] == nth:
                raise Killed

    monkeypatch.setattr(trainer_module, name, wrapped)


@pytest.mark.parametrize(("name", "target", "nth"), [
    ("save_checkpoint", "last.pt", 1),  # after the commit of epoch 1: best.pt, metrics missing
    ("save_checkpoint", "best.pt", 1),  # after best.pt: the metrics line missing
    ("save_checkpoint", "last.pt", 2),  # the last epoch's commit: its best.pt (if better) and
    #                                     its line missing, nothing left to train
    ("write_text_atomic", "metrics.jsonl", 2),  # the whole epoch committed, montage not written
])
def test_a_stop_between_the_writes_of_an_epoch_is_repaired_on_resume(tmp_path, monkeypatch, name,
                                                                     target, nth):
    with monkeypatch.context() as m:
        _stop_after(m, name, target, nth)
        with pytest.raises(Killed):
            train(_cfg(tmp_path))
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == nth  # committed
    train(_cfg(tmp_path), resume=True)
    _consistent(tmp_path / "run", 2)


def test_a_stale_best_pt_is_restored_from_last_pt(tmp_path, finished_run):
    """best.pt older than the best epoch (the state a kill between the commit and best.pt
    leaves): resume makes it the best epoch's, from last.pt."""
    run = _copy_run(finished_run, tmp_path / "run")
    last = load_checkpoint(run / "last.pt")
    last["history"][0]["val"]["seg"]["miou"] = -1.0  # epoch 2 is now the recorded best
    last["history"][1]["val"]["seg"]["miou"] = 2.0
    last["best"], last["best_epoch"] = 2.0, 2
    _replace(run / "last.pt", ckpt=last)
    _replace(run / "best.pt", ckpt={**last, "epoch": 1, "best": -1.0})  # the older best
    trainer = Trainer(_cfg(tmp_path), load_pretrained=False)
    assert trainer.resume()
    assert load_checkpoint(run / "best.pt")["epoch"] == 2
    assert [r["epoch"] for r in _records(run)] == [1, 2]


def _killed_before_best(tmp_path: Path, monkeypatch, run: str, **model: object) -> Path:
    """A real 3-epoch run stopped right after epoch 3's commit (last.pt) and before its best.pt:
    validation is made to improve every epoch, so best.pt holds epoch 2 while last.pt records
    epoch 3 as the best (what a kill -9 between the protocol's writes (1) and (2) leaves)."""
    real, calls = trainer_module.evaluate, {"n": 0}

    def improving(*args, **kwargs):
        metrics, kept = real(*args, **kwargs)
        calls["n"] += 1
        metrics["seg"]["miou"] = 0.1 * calls["n"]
        return metrics, kept

    cfg = _cfg(tmp_path, run, epochs=3)
    for k, v in model.items():
        setattr(cfg.model, k, v)
    with monkeypatch.context() as m:
        m.setattr(trainer_module, "evaluate", improving)
        _stop_after(m, "save_checkpoint", "last.pt", 3)
        with pytest.raises(Killed):
            train(cfg)
    run_dir = tmp_path / run
    last = load_checkpoint(run_dir / "last.pt")
    assert (last["epoch"], last["best_epoch"]) == (3, 3)
    assert load_checkpoint(run_dir / "best.pt")["epoch"] == 2  # stale
    return run_dir


def test_export_evaluate_and_teacher_use_the_runs_best_after_a_kill_before_best_pt(
        tmp_path, monkeypatch, capsys):
    """Not only --resume: every reader of best.pt reconciles the run directory first."""
    run = _killed_before_best(tmp_path, monkeypatch, "run")
    stale = tmp_path / "stale.pt"
    os.link(run / "best.pt", stale)  # epoch 2's weights, to tell the two apart
    conf = str(_yaml(tmp_path / "c.yaml"))
    scores = {}
    for name, model in (("run", run), ("last", run / "last.pt"), ("stale", stale)):
        out = tmp_path / f"{name}.json"
        assert main(["evaluate", str(model), "--config", conf, "--json", str(out)]) == 0
        scores[name] = json.loads(out.read_text())
    assert scores["run"] == scores["last"] != scores["stale"]  # evaluate scored epoch 3
    assert load_checkpoint(run / "best.pt")["epoch"] == 3  # restored, as resume restores it
    capsys.readouterr()

    run = _killed_before_best(tmp_path, monkeypatch, "run2")  # export alone, from the kill state
    art = tmp_path / "a.safetensors"
    assert main(["export", str(run), "--out", str(art)]) == 0, capsys.readouterr().err
    assert read_metadata(art).training["epoch"] == 3
    best = load_checkpoint(run / "best.pt")
    assert best["epoch"] == 3 and best["best"] == pytest.approx(0.3)

    teacher = _killed_before_best(tmp_path, monkeypatch, "teacher", arch="teacher",
                                  aux_input="depth")
    loaded = load_teacher(teacher)  # what `mtl-train pseudo-label --teacher DIR` reads
    assert load_checkpoint(loaded.path)["epoch"] == 3
    assert loaded.sha256 == file_sha256(teacher / "last.pt")


def test_a_best_pt_the_run_can_no_longer_restore_is_one_line_for_every_reader(tmp_path,
                                                                              finished_run):
    """best.pt older than the recorded best while last.pt has moved past it: no reader may ship
    the stale file, and none can repair it."""
    run = _copy_run(finished_run, tmp_path / "run")
    last = load_checkpoint(run / "last.pt")
    last["history"][0]["val"]["seg"]["miou"] = 2.0  # epoch 1 the best, best.pt gone
    last["history"][1]["val"]["seg"]["miou"] = -1.0
    last["best"], last["best_epoch"] = 2.0, 1
    _replace(run / "last.pt", ckpt=last)
    (run / "best.pt").unlink()
    with pytest.raises(CheckpointError, match=r"best\.pt") as err:
        export_run(run, tmp_path / "a.safetensors")
    assert "\n" not in str(err.value) and "epoch 1" in str(err.value)
    with pytest.raises(PseudoLabelError, match=r"best\.pt"):
        load_teacher(run)


def test_mid_epoch_checkpoint_resumes_where_it_stopped_and_matches_a_straight_run(tmp_path,
                                                                                  monkeypatch):
    straight = Trainer(_cfg(tmp_path, "straight", epochs=2, batch_size=2))
    straight.fit()
    # 4 steps an epoch; stop right after the mid-epoch save at step 6 (epoch 2, 4 of 8 samples)
    cfg = _cfg(tmp_path, "stopped", epochs=2, batch_size=2, checkpoint_every=3)
    with monkeypatch.context() as m:
        _stop_after(m, "save_checkpoint", "last.pt", 3)  # 3rd write: step 3, epoch 1, step 6
        with pytest.raises(Killed):
            train(cfg)
    last = load_checkpoint(tmp_path / "stopped" / "last.pt")
    assert (last["epoch"], last["step"], last["partial"]["pos"]) == (1, 6, 4)
    train(_cfg(tmp_path, "stopped", epochs=2, batch_size=2, checkpoint_every=3), resume=True)
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "stopped" / "last.pt")
    assert b["step"] == a["step"] == 8
    for k, v in a["model"].items():
        assert torch.allclose(v.float(), b["model"][k].float(), atol=1e-5), k
    _consistent(tmp_path / "stopped", 2)


# -- kill -9 at random instants -----------------------------------------------------------------
def _kill_loop(tmp_path: Path, kills: int, seed: int, epochs: int, max_wait: float) -> dict:
    """Start `python -m mtl_training train`, SIGKILL it at a random instant (up to `max_wait` s)
    once training has begun, resume with --resume; `kills` times, then let it finish."""
    rng = random.Random(seed)
    conf = _yaml(tmp_path / "kill.yaml", epochs=epochs, batch_size=2, checkpoint_every=1)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "mtl_training", "train", "--config", str(conf), "--out", str(run)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "train.log"
    stats = {"kills": 0, "starts": 0, "killed_at": []}
    deadline = time.monotonic() + 240
    while True:
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        started = time.time()
        with log.open("a") as out:
            proc = subprocess.Popen(cmd + (["--resume"] if stats["starts"] else []), cwd=REPO,
                                    env=env, stdout=out, stderr=subprocess.STDOUT)
        stats["starts"] += 1
        if stats["kills"] < kills:
            cfg_file = run / "config.yaml"
            while proc.poll() is None and not (cfg_file.exists()
                                               and cfg_file.stat().st_mtime >= started):
                time.sleep(0.02)  # training has begun once this process wrote config.yaml
            time.sleep(rng.uniform(0.1, max_wait))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                stats["kills"] += 1
                last = run / "last.pt"
                stats["killed_at"].append(load_checkpoint(last)["step"] if last.exists() else 0)
                continue
        rc = proc.wait(timeout=120)
        assert rc == 0, log.read_text()[-3000:]
        print(f"kill -9 loop: {stats}")  # shown with -s: how many kills, at which committed step
        return stats


@pytest.mark.parametrize(("kills", "seed", "epochs", "max_wait"), [
    (5, 17, 4, 2.5),  # ~35 s on 2 cores: kills spread over the whole 16-step run
    pytest.param(15, 29, 6, 1.2, marks=pytest.mark.slow),  # ~90 s: denser kills, 24 steps
])
def test_kill9_loop_loses_nothing(tmp_path, kills, seed, epochs, max_wait):
    stats = _kill_loop(tmp_path, kills, seed, epochs, max_wait)
    run = tmp_path / "run"
    assert stats["kills"] >= 1, stats  # at least one kill landed before the run finished
    _consistent(run, epochs)
    last = load_checkpoint(run / "last.pt")
    assert last["step"] == 4 * epochs  # every step done exactly once: none lost, none repeated
    assert [r["step"] for r in _records(run)] == [4 * e for e in range(1, epochs + 1)]
    assert not list(run.glob(".*.tmp*"))  # a resume clears the temp files kills left
    art = export_run(run, tmp_path / "student.safetensors")
    assert art.is_file() and art.stat().st_size > 0


def test_an_inverse_depth_run_is_not_exported_as_metric_depth(tmp_path, finished_run):
    """The node publishes 32FC1 metres (REP 118): a head trained on 1/m must not ship as metres."""
    run = _copy_run(finished_run, tmp_path / "run")
    ckpt = load_checkpoint(run / "best.pt")
    ckpt["config"]["data"]["depth_target"] = "inverse"
    _replace(run / "best.pt", ckpt=ckpt)
    with pytest.raises(ArtifactError, match="depth_target=inverse") as err:
        export_run(run, tmp_path / "a.safetensors")
    assert "\n" not in str(err.value) and not (tmp_path / "a.safetensors").exists()


def test_cosine_schedule_runs_down_and_a_resume_with_more_epochs_follows_the_new_curve(tmp_path):
    """Each record's lr is the rate its epoch trained at; a resume recomputes the closed form."""
    from mtl_training.lr_schedule import lr_factor

    cfg = _cfg(tmp_path, lr_schedule="cosine")
    run = train(cfg)
    assert [r["lr"] for r in _records(run)] == pytest.approx([1e-3, 1e-3 * 0.5])
    rc = main(["train", "--config", str(_yaml(tmp_path / "c.yaml", lr_schedule="cosine",
                                              epochs=4)),
               "--out", str(run), "--resume"])
    assert rc == 0
    longer = load_config(run / "config.yaml").train
    assert longer.epochs == 4
    want = [1e-3, 5e-4] + [1e-3 * lr_factor(longer, e) for e in (2, 3)]
    assert [r["lr"] for r in _records(run)] == pytest.approx(want)
    assert want[-1] < 2e-4  # the run ends on small steps
    _consistent(run, 4)


def test_resume_reads_a_checkpoint_written_with_the_former_step_scheduler(tmp_path, finished_run):
    """Runs trained before lr_schedule existed kept StepLR's state: they still resume."""
    run = _copy_run(finished_run, tmp_path / "run")
    ckpt = load_checkpoint(run / "last.pt")
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    old = torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)
    old.last_epoch = 2
    ckpt["scheduler"] = old.state_dict()
    (run / "last.pt").unlink()
    save_checkpoint(ckpt, run / "last.pt")
    cfg = _cfg(tmp_path, epochs=3, lr_step_epochs=1)
    trainer = Trainer(cfg, load_pretrained=False)
    assert trainer.resume()
    assert trainer.scheduler.last_epoch == 2
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.25)
