"""The headless training loop: one process or many under ``torchrun``, resumable, with validation.

Run folder layout (``--out RUN_DIR``)::

    run.json          model, configuration, options, package version (a folder trains one model)
    split.json        the subject-level train/validation split
    cache/            normalised cases (.npz), shared by all ranks and workers
    checkpoints/      last.pt (every N steps, at the end, and on SIGINT/SIGTERM), best.pt (the recipe's
                      validation figure: PSNR, or the MP-GAN's 1-NN accuracy)
    metrics.csv       one row per step: losses, seconds, samples/s; validation rows add the recipe's
                      validation figures (PSNR and SSIM, or 1-NN accuracies)
    validation/       step-XXXXXXX.png: input | target | prediction | |error| of a validation sample

Reproducibility: the batch of step ``s`` on rank ``r`` is drawn from ``default_rng([seed, s])`` (the global
batch) and rank ``r`` takes its share, so a resumed run, or K processes with batch B each, see exactly
the batches of one uninterrupted process with batch K x B.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..errors import InputError
from ..inference import choose_device
from ..phantom.cases import FIRST_TRAINING_SEED
from ..volume import discard_if_failed, output_folder, refuse_inside
from . import checkpoint
from .data import (CaseCache, FolderSource, PhantomSource, build_cache, cached_voxel_size, load_cases,
                   shared_voxel_size, split_cases)
from .initial_weights import initialise_generator
from .recipes import recipe_for

DEFAULT_PHANTOM_SUBJECTS = 12
#: a 3D model's folder cases may have voxels this many times longer in one direction (1 x 1 x 1.2 mm, a
#: 0.94 mm in-plane 1 mm scan) but not more (3 x 3 x 6): inference resamples every direction to one size
MAX_ANISOTROPY_3D = 1.25


@dataclass
class TrainOptions:
    model: str
    out: str
    config: str = "lite"
    data: str = "phantom:brain"
    steps: int = 200
    steps_per_epoch: int = 25
    batch_size: int | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    resume: bool = False
    init_from: str | None = None  # "bundled" or a weight file / checkpoint: fine-tune from it (initial_weights.py)
    checkpoint_every: int = 25
    validation_fraction: float = 0.2
    validation_batches: int = 2
    workers: int = 0
    anatomy: str | None = None
    voxel_size_mm: float | None = None  # a folder's cases resampled onto this isotropic grid (None: as they are)
    command: str = ""  # the command line that started the run, for the model card
    recipe_options: dict = field(default_factory=dict)


def anatomy_of(data: str, given: str | None, recipe_cls) -> str:
    """The anatomy a run trains on: the phantom's (``phantom:breast``), else ``--anatomy``, else the recipe's."""
    if data.startswith("phantom:"):
        parts = data.split(":")
        phantom = parts[1] if len(parts) > 1 and parts[1] else recipe_cls.anatomy
        if given and given != phantom:
            raise InputError(f"--anatomy {given} contradicts --data {data}")
        return phantom
    return given or recipe_cls.anatomy


def source_for(data: str, recipe_cls, config: str, seed: int, anatomy: str | None = None,
               voxel_size_mm: float | None = None):
    """``phantom:brain[:N]``, ``phantom:breast[:N]`` (N subjects, seeds 1000*seed + 0..N-1) or a folder/manifest
    (resampled onto an isotropic ``voxel_size_mm`` grid when given)."""
    anatomy = anatomy_of(data, anatomy, recipe_cls)
    sequences = recipe_cls.task_for(anatomy)[2]
    if voxel_size_mm is not None and (data.startswith("phantom:") or not voxel_size_mm > 0):
        raise InputError(f"--voxel-size {voxel_size_mm:g}: " + ("the phantom is simulated at its recipe's voxel size; "
                         "--voxel-size is for a folder of cases" if data.startswith("phantom:") else "must be positive"))
    if data.startswith("phantom:"):
        parts = data.split(":")
        try:
            n = int(parts[2]) if len(parts) > 2 else DEFAULT_PHANTOM_SUBJECTS
        except ValueError as err:
            raise InputError(f"--data {data}: the number of subjects must be an integer") from err
        if n < 2:
            raise InputError(f"--data {data}: at least 2 subjects are needed (one for validation)")
        # the tests, the demo and held-out evaluation use seeds below FIRST_TRAINING_SEED
        seeds = [FIRST_TRAINING_SEED + 1000 * seed + i for i in range(n)]
        return PhantomSource(anatomy, seeds, sequences=sequences, scheme=recipe_cls.normalization,
                             resolution=recipe_cls.phantom_resolution[config], foreground=recipe_cls.foreground)
    return FolderSource(data, sequences=sequences, scheme=recipe_cls.normalization, foreground=recipe_cls.foreground,
                        voxel_size_mm=voxel_size_mm)


class _Stop:
    """Set by SIGINT/SIGTERM: the loop checkpoints after the current step and returns."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no signal handling
                pass
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _distributed() -> tuple[int, int]:
    """(world size, rank); initialises the process group under torchrun (gloo on CPU, NCCL on GPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 1, 0
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return world, dist.get_rank()


def check_numbers(options: TrainOptions) -> None:
    """Every number of the command in range, before any subject is simulated or case read."""
    if options.steps < 1 or options.steps_per_epoch < 1 or options.checkpoint_every < 1:
        raise InputError("--steps, --steps-per-epoch and --checkpoint-every must be positive")
    if options.batch_size is not None and options.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, not {options.batch_size}")
    if options.workers < 0:
        raise InputError(f"--workers must be 0 or more, not {options.workers}")
    if not 0 <= options.seed < 2 ** 32:
        raise InputError(f"--seed must be between 0 and 2**32 - 1, not {options.seed}")


#: what a resumed run must share with the run it continues (its cases, split, batches and networks), and the
#: option each comes from, for the message
RESUME_FIXED = {"data": "--data", "seed": "--seed", "batch_size": "--batch-size", "anatomy": "--anatomy",
                "validation_fraction": "the validation fraction",
                "recipe_options": "the model's options (--widths, --variant, --without-...)"}


def _resolved(key: str, value, recipe_cls, config: str):
    """An option as the run uses it, so that two spellings of one run compare equal: a folder's absolute path,
    the phantom's subject count, the recipe's batch size for none given, model options with their defaults."""
    import inspect

    if key == "data" and isinstance(value, str):
        if value.startswith("phantom:"):
            parts = value.split(":")
            anatomy = parts[1] if len(parts) > 1 and parts[1] else recipe_cls.anatomy
            return f"phantom:{anatomy}:{parts[2] if len(parts) > 2 else DEFAULT_PHANTOM_SUBJECTS}"
        return str(Path(value).resolve())
    if key == "batch_size":
        return value or recipe_cls.batch_size[config]
    if key == "recipe_options":
        defaults = {name: parameter.default for name, parameter in
                    inspect.signature(recipe_cls.__init__).parameters.items()
                    if parameter.default is not inspect.Parameter.empty}
        return {k: v for k, v in json.loads(json.dumps(value or {})).items() if defaults.get(k, object()) != v}
    return value


def _resume_differences(previous: dict, options: TrainOptions, recipe_cls) -> list[str]:
    """The options a resume gives differently from the run's own (run.json), by name and both values; keys an
    older run.json does not record are not compared."""
    now = json.loads(json.dumps(asdict(options)))  # tuples as lists, as run.json holds them
    return [f"{flag} {json.dumps(previous[key])} (now {json.dumps(now.get(key))})" for key, flag in RESUME_FIXED.items()
            if key in previous and not (key == "anatomy" and previous[key] is None)  # older runs: not recorded
            and _resolved(key, previous[key], recipe_cls, options.config)
            != _resolved(key, now.get(key), recipe_cls, options.config)]


def _prepare_run_folder(options: TrainOptions, rank: int, initialised_from: str | None = None) -> Path:
    out = Path(options.out)
    run_file = out / "run.json"
    if run_file.exists():
        previous = checkpoint.read_record(run_file, ("model", "config"))
        if previous.get("model") != options.model or previous.get("config") != options.config:
            raise InputError(f"{out}: holds a run of {previous.get('model')} ({previous.get('config')}); "
                             f"use another folder for {options.model} ({options.config})")
        trained = (out / "checkpoints" / "last.pt").exists()
        if not options.resume and trained:
            raise InputError(f"{out}: already holds checkpoints; pass --resume to continue or use another folder")
        before = (previous.get("options") or {}).get("voxel_size_mm")
        if options.resume and before != options.voxel_size_mm:  # its cached cases lie on the first run's grid
            raise InputError(f"{out}: its cases were prepared with --voxel-size {before if before else 'not given'}; "
                             "resume with the same (or train into another folder)")
        differences = (_resume_differences(previous.get("options") or {}, options, recipe_for(options.model))
                       if options.resume else [])
        if differences:  # "continues exactly": the same cases, split, batches and networks
            raise InputError(f"{out}: a resumed run continues with its own options; this one was started with "
                             + "; ".join(differences) + ". Resume with the same, or train into another folder")
        if not options.resume and not trained and rank == 0:  # an attempt refused before its first checkpoint:
            _start_over(out, previous.get("options") or {}, options)  # this run's record and data, not that one's
    elif options.resume:
        raise InputError(f"{out}: nothing to resume (no run.json)")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    if rank == 0:
        output_folder(out / "checkpoints")
        (out / "validation").mkdir(exist_ok=True)
        if not run_file.exists():
            record = {"model": options.model, "config": options.config, "options": asdict(options), "version": __version__}
            if initialised_from:  # which weights "bundled" meant when the run began (the card names them)
                record["initialised_from"] = initialised_from
            run_file.write_text(json.dumps(record, indent=1))
    return out


def _start_over(out: Path, previous: dict, options: TrainOptions) -> None:
    """A run folder whose earlier attempt stopped before its first checkpoint (refused for its data, say):
    its run.json and metrics are that attempt's, and its cached cases too when it read other data, so they
    go, and the new run records its own."""
    (out / "run.json").unlink(missing_ok=True)
    (out / "metrics.csv").unlink(missing_ok=True)
    same_cases = all(previous.get(k) == getattr(options, k) for k in ("data", "anatomy", "voxel_size_mm", "seed"))
    if not same_cases:
        shutil.rmtree(out / "cache", ignore_errors=True)


def _record_resume_command(out: Path, command: str) -> None:
    """Append a resumed invocation to run.json's command (the model card's "exact command" is every
    invocation, in order). Called once the checkpoint has loaded: a refused resume changes nothing."""
    if not command:
        return
    run_file = out / "run.json"
    record = json.loads(run_file.read_text())
    before = record.setdefault("options", {}).get("command", "")
    record["options"]["command"] = f"{before} ; then {command}" if before else command
    run_file.write_text(json.dumps(record, indent=1))


class StepBatches(torch.utils.data.Dataset):
    """Item ``s`` is the global batch of step ``s``: ``make_batch(cases, default_rng([seed, s]), size)``.

    Batches depend only on the step, so ``--workers`` processes (a ``DataLoader``) can draw the next ones
    while the model trains on this one, and the run stays exactly reproducible and resumable.
    """

    def __init__(self, make_batch, cases, seed: int, size: int) -> None:
        self.make_batch, self.cases, self.seed, self.size = make_batch, cases, seed, size

    def __len__(self) -> int:
        return 2 ** 62

    def __getitem__(self, step: int) -> dict:
        return self.make_batch(self.cases, np.random.default_rng([self.seed, step]), self.size)


def _keep_numpy(batch: dict) -> dict:
    return batch


def _leave_stopping_to_the_trainer(worker_id: int) -> None:
    """In a batch-drawing worker: ignore SIGINT and SIGTERM. Ctrl-C in a terminal, ``kill -- -PGID`` and
    batch schedulers signal the whole process group; a worker dying of it made the trainer crash with a
    traceback before it could checkpoint. The trainer's own handler stops the run, and the DataLoader then
    shuts its workers down (they also exit when the trainer dies)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def step_batches(recipe, cases, options: TrainOptions, size: int, start: int):
    """The training batches from ``start`` on, drawn in ``options.workers`` worker processes (0: here)."""
    loader = torch.utils.data.DataLoader(
        StepBatches(recipe.make_batch, cases, options.seed, size), batch_size=None, sampler=range(start, options.steps),
        num_workers=options.workers, collate_fn=_keep_numpy, prefetch_factor=2 if options.workers else None,
        worker_init_fn=_leave_stopping_to_the_trainer if options.workers else None,
        generator=torch.Generator().manual_seed(options.seed))  # its own: the global stream drives dropout
    return iter(loader)


def _best_of(state: dict, selected: str, higher_is_better: bool) -> float:
    """A checkpoint's best validation figure, signed so that higher is better. Checkpoints written before
    recipes chose their figure hold ``best_psnr``, which was PSNR for every recipe."""
    if "best_score" in state:
        if state.get("selection") != selected:
            raise InputError(f"the checkpoint picked its best by {state.get('selection')}, this run by {selected}")
        return state["best_score"] if higher_is_better else -state["best_score"]
    if selected != "val_psnr":
        return -math.inf  # an older checkpoint's PSNR says nothing about this figure: start afresh
    return state["best_psnr"]


def _metrics_writer(log, fields: list[str]) -> csv.DictWriter:
    """A writer for metrics.csv: a new file gets ``fields`` as its header; a resumed run's rows follow
    the header already there, whatever losses its phase reports (a GAN after a warm-up logs others), so
    every row lines up with the one header."""
    if log.tell() > 0:
        with open(log.name, newline="") as existing:
            fields = next(csv.reader(existing))
        return csv.DictWriter(log, fieldnames=fields, extrasaction="ignore")
    writer = csv.DictWriter(log, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    return writer


def _write_example(example, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = [a[a.shape[0] // 2] if a.ndim == 3 else a for a in example]
    images.append(np.abs(images[1] - images[2]))
    fig, axes = plt.subplots(1, 4, figsize=(10, 2.8))
    for ax, image, title in zip(axes, images, ("input", "target", "prediction", "|error|")):
        ax.imshow(image, cmap="gray" if title != "|error|" else "jet", vmin=-1 if title != "|error|" else 0, vmax=1)
        ax.set_title(title)
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def train(options: TrainOptions, *, progress: bool = True, say=print) -> dict:
    """Train ``options.model``; returns a summary (steps done, the best validation figure, files)."""
    recipe_cls = recipe_for(options.model)
    check_numbers(options)
    world, rank = _distributed()
    device = choose_device(options.device)
    if device.type == "cuda" and world > 1:
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    torch.manual_seed(options.seed)
    anatomy = anatomy_of(options.data, options.anatomy, recipe_cls)
    options = replace(options, anatomy=anatomy)
    # the networks first: a missing perceptual backbone is reported before minutes of data preparation
    recipe = recipe_cls(options.config, device, options.amp, anatomy=anatomy, **options.recipe_options)
    recipe.plan(options.steps, options.steps_per_epoch)
    if rank == 0:
        for note in recipe.notes:
            say(f"note: {note}")
    initialised_from = None
    if options.init_from:
        if options.resume:
            raise InputError("--init-from starts a new run; a resumed run continues from its own last checkpoint")
        initialised_from = initialise_generator(recipe, options.init_from, options.model, options.config, anatomy,
                                                stem=recipe_cls.file_stem(anatomy, options.config, options.recipe_options))
        if rank == 0:
            say(f"note: the generator starts from {initialised_from}")
    refuse_inside(options.out, options.data)
    # a run refused for its data (an unreadable case, NaN voxels) leaves no run folder behind
    with discard_if_failed(options.out) if rank == 0 else nullcontext():
        out = _prepare_run_folder(options, rank, initialised_from)
        # a damaged checkpoint is named before the data are prepared or split.json is rewritten
        resumed = checkpoint.load(out / "checkpoints" / "last.pt") if options.resume else None
        source = source_for(options.data, recipe_cls, options.config, options.seed, anatomy, options.voxel_size_mm)
        names = source.names()
        # a 3D model resamples every direction to the one voxel size its weights record
        anisotropy = MAX_ANISOTROPY_3D if recipe_cls.inference_size[options.config] and not options.resume else None
        if isinstance(source, FolderSource) and not options.voxel_size_mm:
            headers = source.header_voxel_sizes()  # differing voxel sizes refused before the cases are read
            if headers:
                shared_voxel_size(headers, max_anisotropy=anisotropy)
        train_names, val_names = split_cases(names, options.validation_fraction, options.seed)
        cache = CaseCache(out / "cache")
        if rank == 0:
            (out / "split.json").write_text(json.dumps({"train": train_names, "validation": val_names}, indent=1))
            build_cache(source, names, cache)  # build the cache once, before other ranks read it
            if not options.data.startswith("phantom:"):  # the phantom's is its recipe's
                cached_voxel_size(cache, names, max_anisotropy=anisotropy)  # the one the weights record
    if world > 1:
        torch.distributed.barrier()
    train_cases = load_cases(source, train_names, cache, recipe.prepare_case)
    val_cases = load_cases(source, val_names, cache, recipe.prepare_case)

    batch_size = options.batch_size or recipe.batch_size[options.config]
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel
        for key, net in recipe.networks.items():
            if any(p.requires_grad for p in net.parameters()):
                recipe.networks[key] = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)

    selected, higher_is_better = recipe.selection
    start, best, stale = 0, -math.inf, 0  # best: the selection figure, signed so that higher is better
    last = out / "checkpoints" / "last.pt"
    if resumed is not None:
        state = resumed
        if state.get("model") != options.model:
            raise InputError(f"{last}: is a checkpoint of {state.get('model')}, not {options.model}")
        recipe.load_state_dict(state["recipe"])
        checkpoint.set_rng_state(state["rng"])
        if rank == 0:  # the resume is accepted: checkpoint, data and networks all loaded
            _record_resume_command(out, options.command)
        start, best, stale = state["step"], _best_of(state, selected, higher_is_better), state["stale"]

    validation_set = recipe.validation_set(val_cases, options.seed, batch_size, options.validation_batches)

    def state_at(step: int) -> dict:
        return {"model": options.model, "config": options.config, "step": step, "selection": selected,
                "best_score": best if higher_is_better else -best, "stale": stale,
                "recipe": recipe.state_dict(), "rng": checkpoint.rng_state()}

    from tqdm import tqdm
    log = (out / "metrics.csv").open("a", newline="") if rank == 0 else None
    writer = None
    patience = recipe.patience[options.config]
    bar = tqdm(total=options.steps, initial=start, desc=f"train {options.model}", unit="step",
               disable=not progress or rank != 0)
    step = start
    try:
        with _Stop() as stop:
            batches = step_batches(recipe, train_cases, options, batch_size * world, start)
            while step < options.steps:
                began = time.perf_counter()
                global_batch = next(batches)
                local = {k: v[rank * batch_size:(rank + 1) * batch_size] for k, v in global_batch.items()}
                loaded = time.perf_counter()
                losses = recipe.train_step(recipe.to_tensors(local))
                step += 1
                seconds = time.perf_counter() - began
                row = {"step": step, **losses, "seconds": seconds, "data_seconds": loaded - began,
                       "samples_per_s": batch_size * world / max(seconds, 1e-9)}
                if step % options.steps_per_epoch == 0 or step == options.steps:
                    if step % options.steps_per_epoch == 0:
                        recipe.end_of_epoch()
                    scores = recipe.validate(validation_set)
                    row.update({k: v for k, v in scores.items() if k != "example"})
                    if rank == 0:
                        _write_example(scores["example"], out / "validation" / f"step-{step:07d}.png")
                    score = scores[selected] if higher_is_better else -scores[selected]
                    if score > best:
                        best, stale = score, 0
                        if rank == 0:
                            checkpoint.save(out / "checkpoints" / "best.pt", state_at(step))
                    else:
                        stale += 1
                if rank == 0:
                    if writer is None:
                        writer = _metrics_writer(log, ["step", *(recipe.loss_names or losses), "seconds",
                                                       "data_seconds", "samples_per_s", *recipe.validation_names])
                    writer.writerow(row)
                    log.flush()
                bar.update(1)
                bar.set_postfix(loss=f"{losses['loss']:.4f}", samples_s=f"{row['samples_per_s']:.1f}")
                patient = step - recipe.final_phase_start() >= patience * options.steps_per_epoch
                stopping = stop.requested or (stale >= patience and patient)
                if rank == 0 and (step % options.checkpoint_every == 0 or step == options.steps or stopping):
                    checkpoint.save(last, state_at(step))
                if stopping:
                    say(f"stopped at step {step}: " + ("interrupted; resume with --resume" if stop.requested
                                                       else f"no validation improvement in {patience} epochs"))
                    break
    finally:
        bar.close()
        if log is not None:
            log.close()
    return {"model": options.model, "config": options.config, "steps": step, "selection": selected,
            "best_score": best if higher_is_better else -best,
            "run_dir": str(out), "last": str(last), "best": str(out / "checkpoints" / "best.pt")}
