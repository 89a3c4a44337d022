"""What a training recipe provides; the trainer (``training.trainer``) does the rest."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn


class Recipe:
    """A model's training: its networks, optimizers, schedulers, batches and one step.

    Subclasses set the class attributes and implement :meth:`make_batch`, :meth:`train_step` and
    :meth:`predict`. ``networks[inference_network]`` (``generator`` unless a recipe says otherwise) is the
    network that export writes and inference runs.
    """

    model: str = ""
    #: the network export writes (the MP-GAN's weight average, say)
    inference_network: str = "generator"
    #: the generator's input and output sequences, in channel order
    inputs: Sequence[str] = ()
    targets: Sequence[str] = ()
    #: sequences every training case must have (inputs and targets)
    sequences: Sequence[str] = ()
    #: per anatomy, (inputs, targets, sequences) when the recipe trains more than one task (IMPORTANT-Net
    #: brain and breast, say); an anatomy missing here uses the class attributes above
    tasks: dict[str, tuple[Sequence[str], Sequence[str], Sequence[str]]] = {}
    #: inference patch (3D) or slice size (2D) the exported weights are run with; None: whole slices
    inference_size: dict[str, tuple[int, ...] | None] = {"lite": None, "paper": None}
    #: which frame of each 4D input series a 2D/3D generator sees ({"DCE": 1}, say); export writes the
    #: ones among the task's inputs into the manifest, so inference picks the same frame
    frames: dict[str, int] = {}
    #: per anatomy, the sequences the generator takes and makes as whole 4D series, with the frames it makes
    #: for a synthesized one (export writes them into the manifest's ``series``)
    series: dict[str, dict[str, int]] = {}
    #: intensity normalisation of the cases (``training.data.NORMALIZATIONS``)
    normalization: str = "zscore"
    #: the foreground the normalisation's statistics come from (``preprocess.FOREGROUND_METHODS``)
    foreground: str = "body"
    #: phantom anatomy the recipe trains on by default
    anatomy: str = "brain"
    #: phantom resolution (mm) per configuration when training on the phantom
    phantom_resolution: dict[str, float] = {"lite": 2.0, "paper": 1.0}
    #: default batch size and validation patience (in validations) per configuration
    batch_size: dict[str, int] = {"lite": 4, "paper": 16}
    patience: dict[str, int] = {"lite": 5, "paper": 20}
    #: True when the recipe takes ``perceptual=`` (``training.losses.PERCEPTUAL_CHOICES``); the CLI's
    #: ``--without-perceptual`` then passes ``perceptual="off"``
    uses_perceptual: bool = False
    #: per configuration, keyword overrides the generator is built with (``models.build(model, config,
    #: **overrides)``); export records them in the manifest so inference builds the same network
    build_overrides: dict[str, dict] = {}
    #: recipe options that are also generator build arguments (``norm_kind``, say); export adds the values
    #: a run was trained with to the manifest's build overrides
    model_options: tuple[str, ...] = ()
    #: every loss a step of any phase reports, in metrics.csv's order; empty: those of the run's first
    #: step (one phase). A recipe whose phases report different losses names them all, or the later
    #: phases' losses would have no column
    loss_names: tuple[str, ...] = ()
    #: the validation figure that picks best.pt and counts early stopping's patience, and whether higher
    #: is better; :meth:`validate` returns it among ``validation_names`` (metrics.csv's validation columns)
    selection: tuple[str, bool] = ("val_psnr", True)
    validation_names: tuple[str, ...] = ("val_psnr", "val_ssim")
    selection_label: str = "PSNR on normalised patches (dB)"

    @classmethod
    def file_stem(cls, anatomy: str, config: str, recipe_options: dict) -> str:
        """The exported weight file's name without ``.pt``."""
        return f"{cls.model}-{anatomy}-{config}"

    @classmethod
    def task_for(cls, anatomy: str | None) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """(inputs, targets, sequences every case needs) when training on ``anatomy``."""
        inputs, targets, sequences = cls.tasks.get(anatomy or cls.anatomy, (cls.inputs, cls.targets, cls.sequences))
        return tuple(inputs), tuple(targets), tuple(sequences)

    def __init__(self, config: str, device: torch.device, amp: bool = False, *, anatomy: str | None = None) -> None:
        self.config, self.device, self.amp = config, device, amp
        self.anatomy = anatomy or type(self).anatomy
        self.inputs, self.targets, self.sequences = self.task_for(self.anatomy)
        self.networks: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        #: what the user must know about this run (a term left out, say); the trainer prints them at start
        self.notes: list[str] = []

    # --------------------------------------------------------------- to implement
    def make_batch(self, cases, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimisation step (all networks); returns the loss terms as floats."""
        raise NotImplementedError

    def predict(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(prediction, target, mask) in [-1, 1], for the default :meth:`validate` (a recipe that
        validates otherwise, the MP-GAN, need not implement it)."""
        raise NotImplementedError

    # --------------------------------------------------------------- validation
    def validation_set(self, cases, seed: int, batch_size: int, n_batches: int) -> list:
        """What every validation of the run scores, drawn once: ``n_batches`` batches drawn as training's
        are, from the validation cases, with their own seeds."""
        return [self.to_tensors(self.make_batch(cases, np.random.default_rng([seed, 2 ** 31 + i]), batch_size))
                for i in range(n_batches)]

    def validate(self, validation_set: list) -> dict:
        """``validation_names``' figures on the validation set, and ``example`` (input, target, prediction:
        2D or 3D arrays) for the run's validation PNG. Here: PSNR and SSIM of the first target channel on
        the models' [-1, 1] scale (data range 2)."""
        from ...metrics import psnr, ssim

        psnrs, ssims, example = [], [], None
        for batch in validation_set:
            prediction, target, _ = (t.float().cpu().numpy() for t in self.predict(batch))
            for p, t in zip(prediction, target):
                psnrs.append(psnr(t[0], p[0], data_range=2.0))
                ssims.append(ssim(t[0], p[0], data_range=2.0))
            if example is None:
                example = (batch["inputs"][0, 0].float().cpu().numpy(), target[0, 0], prediction[0, 0])
        finite = [v for v in psnrs if np.isfinite(v)] or [100.0]
        return {"val_psnr": float(np.mean(finite)), "val_ssim": float(np.mean(ssims)), "example": example}

    # --------------------------------------------------------------- shared
    def to_tensors(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device) for k, v in batch.items()}

    def state_dict(self) -> dict:
        def plain(module: nn.Module) -> nn.Module:
            return module.module if hasattr(module, "module") else module  # unwrap DistributedDataParallel
        return {"networks": {k: plain(v).state_dict() for k, v in self.networks.items()},
                "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
                "schedulers": {k: v.state_dict() for k, v in self.schedulers.items()}}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state["networks"].items():
            module = self.networks[key]
            (module.module if hasattr(module, "module") else module).load_state_dict(value)
        for key, value in state["optimizers"].items():
            self.optimizers[key].load_state_dict(value)
        for key, value in state["schedulers"].items():
            self.schedulers[key].load_state_dict(value)

    def prepare_case(self, case):
        """What the trainer keeps of each loaded case (the case itself here); a recipe that needs only
        part of it (the MP-GAN: its patches) returns less, so that many cases fit in memory."""
        return case

    @classmethod
    def warm_up_steps(cls, config: str, options: dict) -> int:
        """Steps of fixed-length warm-up before the last phase, for a run with these recipe ``options``
        (what :meth:`final_phase_start` is for that run; the model card says when the kept checkpoint
        is from a warm-up)."""
        return 0

    def final_phase_start(self) -> int:
        """The step at which this recipe's last training phase begins (0: one phase). Warm-up phases run
        their fixed length; early stopping counts only in the last phase, which gets its full patience
        however long the warm-ups went without improving."""
        return 0

    def plan(self, total_steps: int, steps_per_epoch: int) -> None:
        """Called by the trainer once the run's length is known, before a resumed state is loaded: a
        recipe whose learning-rate schedule spans the whole run (the MP-GAN's decay) builds it here."""

    def end_of_epoch(self) -> None:
        """Called once per epoch (a fixed number of steps): steps the schedulers."""
        for scheduler in self.schedulers.values():
            scheduler.step()
