"""How training runs: worker processes, several processes under torchrun, and export to bundled weights."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from MRISynthesisLib.cli import main
from MRISynthesisLib.errors import InputError
from MRISynthesisLib.training import checkpoint
from MRISynthesisLib.training.export import write_model_card
from MRISynthesisLib.training.trainer import TrainOptions, train
from MRISynthesisLib.weights import load_model, read_manifest

# instance norm, no dropout, plain L1: a step then depends only on the samples, not on how they are split
SPLITTABLE = dict(model="unet-ct1", data="phantom:brain:3", steps_per_epoch=2, checkpoint_every=2,
                  recipe_options={"norm_kind": "instance", "dropout": 0.0, "loss": "l1"})


@pytest.fixture(scope="module")
def cached_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("seed-run")
    train(TrainOptions(out=str(out), steps=1, batch_size=1, **SPLITTABLE), progress=False)
    return out


def _fresh(folder: Path, cached: Path) -> Path:
    folder.mkdir()
    shutil.copytree(cached / "cache", folder / "cache")
    return folder


def _generator(run: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(run / "checkpoints" / "last.pt")["recipe"]["networks"]["generator"]


def test_worker_processes_draw_the_same_batches(tmp_path, cached_run):
    here, workers = _fresh(tmp_path / "here", cached_run), _fresh(tmp_path / "workers", cached_run)
    train(TrainOptions(out=str(here), steps=3, batch_size=1, workers=0, **SPLITTABLE), progress=False)
    train(TrainOptions(out=str(workers), steps=3, batch_size=1, workers=2, **SPLITTABLE), progress=False)
    a, b = _generator(here), _generator(workers)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(InputError, match="--workers must be 0 or more"):
        train(TrainOptions(out=str(tmp_path / "bad"), steps=1, workers=-1, **SPLITTABLE), progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one_process_with_the_doubled_batch(tmp_path, cached_run):
    one, two = _fresh(tmp_path / "one", cached_run), _fresh(tmp_path / "two", cached_run)
    train(TrainOptions(out=str(one), steps=2, batch_size=2, **SPLITTABLE), progress=False)
    options = json.dumps({**SPLITTABLE, "out": str(two), "steps": 2, "batch_size": 1})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           f"--master_port={_free_port()}", str(Path(__file__).with_name("ddp_train.py")), options],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = _generator(one), _generator(two)
    # Adam's first steps move every weight by about the learning rate whatever its gradient's size, so a
    # weight whose gradient is ~0 may step either way on summation-order noise (all-reduce against one
    # batch): a handful of elements may differ, each by at most one step per step taken
    learning_rate, steps = 2e-4, 2
    off, total = 0, 0
    for key in a:
        if a[key].is_floating_point():
            diff = (b[key].double() - a[key].double()).abs()
            assert float(diff.max()) <= 2 * learning_rate * steps, key
            off += int((diff > 1e-5 + 1e-4 * a[key].double().abs()).sum())
            total += diff.numel()
    assert off <= 1e-4 * total, f"{off} of {total} weights differ between one process and two"
    assert not any(torch.equal(a[k], checkpoint.load(cached_run / "checkpoints" / "last.pt")["recipe"]["networks"]
                               ["generator"][k]) for k in a if k.endswith("weight"))  # both really trained


def test_export_command_writes_weights_that_load(tmp_path, cached_run, capsys):
    models = tmp_path / "models"
    run = json.loads((cached_run / "run.json").read_text())
    run["options"]["command"] = "mri-synthesis train --model unet-ct1 --steps 1"  # as the CLI records it
    (cached_run / "run.json").write_text(json.dumps(run))
    assert main(["export", "--run", str(cached_run), "--which", "last", "--out", str(models)]) == 0
    entry, = read_manifest(models)
    assert entry.file == "unet-ct1-brain-lite.pt" and entry.inputs == ("T1", "T2", "FLAIR")
    assert entry.build_overrides == {"norm_kind": "instance", "dropout": 0.0}
    assert entry.foreground == "body"  # what the run's cases were normalised within
    assert entry.training["command"] == "mri-synthesis train --model unet-ct1 --steps 1"
    net = load_model(entry, models)
    trained = _generator(cached_run)
    assert all(torch.allclose(v.float(), trained[k].float(), atol=1e-3, rtol=1e-2) for k, v in net.state_dict().items())
    card = (models / "unet-ct1-brain-lite.md").read_text()
    assert card.count("Research use only") == 1 and "adversarial" not in card and "perceptual" not in card
    assert main(["export", "--run", str(cached_run), "--which", "last", "--out", str(models)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["export", "--run", str(tmp_path / "nothing"), "--out", str(models)]) == 2
    assert "not a training run folder" in capsys.readouterr().err
    # the card's limits say which of the paper's loss terms the recorded command left out
    write_model_card(replace(entry, training={**entry.training, "command": entry.training["command"]
                                              + " --without-perceptual --without-adversarial"}), models)
    card = (models / "unet-ct1-brain-lite.md").read_text()
    assert "without the paper's VGG19 perceptual term" in card and "without the adversarial term" in card
    # and whether the kept checkpoint precedes the adversarial phase (a recipe with a warm-up: TC-MGAN lite)
    assert "warm_up_steps" not in entry.training
    for step, said in ((5, True), (10, True), (11, False)):
        write_model_card(replace(entry, training={**entry.training, "warm_up_steps": 10, "steps": step}), models)
        assert ("is from the warm-up" in (models / "unet-ct1-brain-lite.md").read_text()) is said, step


def test_train_command_records_itself_and_ignores_without_perceptual_where_there_is_no_such_term(tmp_path, cached_run):
    run = _fresh(tmp_path / "run", cached_run)
    argv = ["train", "--model", "unet-ct1", "--data", "phantom:brain:3", "--out", str(run), "--steps", "1",
            "--batch-size", "1", "--workers", "0", "--without-perceptual", "--quiet"]
    assert main(argv) == 0
    recorded = json.loads((run / "run.json").read_text())["options"]
    assert recorded["command"] == "mri-synthesis " + " ".join(argv) and recorded["recipe_options"] == {}


def test_without_adversarial_is_for_seq2seq_only(tmp_path, capsys):
    from MRISynthesisLib.cli import _adversarial_option

    assert main(["train", "--model", "unet-ct1", "--without-adversarial", "--data", "phantom:brain:3", "--out",
                 str(tmp_path / "r"), "--quiet"]) == 2
    assert "--without-adversarial is for seq2seq" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert _adversarial_option("seq2seq", True) == {"adversarial": False}
    assert _adversarial_option("seq2seq", False) == {} == _adversarial_option("tc-mgan", False)


def test_variant_flag_is_for_the_mp_gan_only(tmp_path, capsys):
    assert main(["train", "--model", "unet-ct1", "--variant", "wgan", "--data", "phantom:brain:3", "--out",
                 str(tmp_path / "r"), "--quiet"]) == 2
    assert "--variant is for mp-gan" in capsys.readouterr().err


def _train_process(run: Path, steps: int, *extra: str, workers: int = 0, checkpoint_every: int = 1
                   ) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.Popen([sys.executable, "-m", "MRISynthesisLib.training", "--model", "unet-ct1", "--data",
                             "phantom:brain:3", "--out", str(run), "--steps", str(steps), "--steps-per-epoch", "2",
                             "--checkpoint-every", str(checkpoint_every), "--batch-size", "1", "--workers",
                             str(workers), "--quiet", *extra],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, as a terminal or a scheduler gives it


def test_sigterm_to_the_whole_process_group_checkpoints_without_a_traceback(tmp_path, cached_run):
    """Ctrl-C, ``kill -- -PGID`` and batch schedulers signal every process of the job, the batch-drawing
    workers too: the run must still stop cleanly, checkpointing the step it reached."""
    import signal
    import time

    run = _fresh(tmp_path / "stopped", cached_run)
    process = _train_process(run, 10_000, workers=1, checkpoint_every=10_000)
    metrics = run / "metrics.csv"
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:  # the header and two steps
            break
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read()
    os.killpg(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert 2 <= checkpoint.load(run / "checkpoints" / "last.pt")["step"] < 10_000  # saved on the signal


def test_a_run_killed_with_sigkill_resumes_to_the_same_weights(tmp_path, cached_run):
    import signal
    import time

    straight, killed = _fresh(tmp_path / "straight", cached_run), _fresh(tmp_path / "killed", cached_run)
    assert _train_process(straight, 5).wait(timeout=600) == 0
    process = _train_process(killed, 5)
    last = killed / "checkpoints" / "last.pt"
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        if last.exists() and checkpoint.load(last)["step"] >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # no handler runs: whatever is on disk is what a crash leaves
    process.wait()
    assert checkpoint.load(last)["step"] >= 2  # never a torn file
    assert _train_process(killed, 5, "--resume").wait(timeout=600) == 0
    a, b = _generator(straight), _generator(killed)
    assert all(torch.equal(a[k], b[k]) for k in a)
