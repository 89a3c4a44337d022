"""Seq2Seq training (paper section 3.4, Eq. 1-3): one generator translating any sequence into any other.

Each step draws, for its whole batch (the generator takes one target code per batch), a target j, a set A
of available sources without j (one to S - 1 of them, as the paper's training data has one to three of the
four BraTS sequences silenced; :meth:`Seq2SeqRecipe.draw_sources`) and one source i in A, from the step's
generator (so runs are reproducible). The sources in A enter together, their frames one after another on
the encoder ConvLSTM's time axis, exactly as inference from several sources feeds them
(``predictors._seq2seq``); with |A| = 1 every term below is the paper's single-source one:

* Eq. 1, reconstruction: lambda_r = 10 x L1 plus lambda_p = 0.01 x VGG19 perceptual, on X'_{A->j} and on
  the self-reconstruction X'_{A->i} (the paper's double sum over the available sequences includes i = j;
  one (A, i, j) per step is a stochastic estimate of it).
* Eq. 2, adversarial: least squares, D_j(X_j) -> 1 and D_j(X'_{i->j}) -> 0 for the discriminator, D_j(X'_{i->j})
  -> 1 for the generator, with the per-sequence PatchGAN of the model module (channel j is D_j). The paper
  gives no weight for it; we use 1, and the discriminator has the generator's optimiser settings.
  ``--without-adversarial`` leaves it out: on the phantom, at batch 8, the validation PSNR rose from
  24.7 to 26.3 dB without it (README, runs of 2026-12-04).
* Eq. 3, cycle: X''_{i->j->i} = G(E(X'_{i->j}) | s_i) against X_i, L1. The paper gives no weight; the
  authors' code uses 10, which we follow.

The perceptual loss compares the first 13 ReLU outputs of VGG19 (up to relu5_1) by mean squared error with
equal weights, as the authors' code does (it uses average pooling inside VGG; we keep torchvision's
max pooling so the ImageNet weights mean what they were trained for). Without VGG19's ImageNet file
training stops with a message, unless ``--without-perceptual`` (then the term is left out and the run
says so). Adam 2e-4 (betas 0.5, 0.999: the pix2pix setting, the paper names only the rate), batch 1 as
the paper; the rate decays polynomially (power 0.9, as the code) to 0 over ``decay_epochs`` epochs.
Data: 2.5D stacks of three adjacent axial slices of every sequence, random in-plane crops of
96 x 96 (``lite``, 2 mm phantom) or 192 x 192 (``paper``, the code's crop), intensities clipped to
[0, 2 x p99] and mapped to [-1, 1] (``percentile``, the code's normalisation), random left-right flips.
``channels`` (``--widths``) replaces the configuration's three widths, to test whether ``lite``'s are what
limits it (its bundled brain weights return T1 given T1 alone at 22 dB; README, *Where the target is
missed*); the exported weights record them.

Tasks: brain T1, T1ce, T2, FLAIR (BraTS) and breast T1, T2, DWI, DCE (the paper's in-house protocol less
the fat-saturated and subtraction series the phantom does not make). DWI (b = 0, 800) and DCE (pre-contrast
and every post-contrast phase) stay 4D, as in the paper: a series source enters as its T frames, one
shared-encoder pass each, linked by the encoder ConvLSTM (section 3.2); a series target is unrolled to its
T frames by the decoder ConvLSTM, all of them in the losses. A series is normalised as one (one clip and
scale for all its frames, ``training.data.normalize_case``), which keeps the enhancement curve's shape.
Phase-aware sampling: protocols differ in their DCE phases (the phantom makes 4 or 5 post-contrast ones,
``n_post``), so every batch is drawn from cases sharing the first drawn case's frame counts (one
tensor per batch); frames of a series sit frame-major in the batch's channels (``sampling._stack``) and
``batch["frames"]`` says how many each sequence has.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import InputError
from ...models import build
from ...models.seq2seq import build_discriminator
from ..losses import VGG19Perceptual, check_perceptual_choice
from ..sampling import frame_count, random_slices
from .base import Recipe

BRAIN = ("T1", "T1ce", "T2", "FLAIR")
BREAST = ("T1", "T2", "DWI", "DCE")
LAMBDA_REC, LAMBDA_PERCEPTUAL, LAMBDA_CYCLE, LAMBDA_ADV = 10.0, 0.01, 10.0, 1.0
PERCEPTUAL_RELUS = 13  # relu1_1 ... relu5_1


class Seq2SeqRecipe(Recipe):
    model = "seq2seq"
    inputs = targets = sequences = BRAIN
    tasks = {"brain": (BRAIN, BRAIN, BRAIN), "breast": (BREAST, BREAST, BREAST)}
    #: the phantom's breast protocol: DWI at b = 0 and 800, DCE pre-contrast + up to 5 post-contrast phases
    series = {"breast": {"DWI": 2, "DCE": 6}}
    normalization = "percentile"
    batch_size = {"lite": 2, "paper": 1}
    crop = {"lite": (96, 96), "paper": (192, 192)}
    patience = {"lite": 10, "paper": 20}
    uses_perceptual = True
    model_options = ("channels",)

    def __init__(self, config: str, device: torch.device, amp: bool = False, *, anatomy: str | None = None,
                 perceptual: str = "imagenet", adversarial: bool = True, decay_epochs: int | None = None,
                 channels: tuple[int, int, int] | list[int] | None = None) -> None:
        if (anatomy or "brain") not in self.tasks:
            raise InputError(f"Seq2Seq trains on {' or '.join(self.tasks)} data, not {anatomy}")
        super().__init__(config, device, amp, anatomy=anatomy)
        check_perceptual_choice(perceptual)
        self.perceptual = None if perceptual == "off" else VGG19Perceptual(
            perceptual, after=nn.ReLU, weights=(1.0,) * PERCEPTUAL_RELUS, distance="mse").to(device)
        if perceptual == "off":
            self.notes.append("training without the VGG19 perceptual term of Eq. 1 (--without-perceptual)")
        self.adversarial = adversarial
        if not adversarial:
            self.notes.append("training without the adversarial term of Eq. 2 (--without-adversarial)")
        widths = {} if channels is None else {"channels": tuple(channels)}  # --widths; the export records them
        generator = build("seq2seq", config, **widths).to(device)  # the BraTS four lead its code order
        self.networks["generator"] = generator
        self.optimizers["generator"] = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
        if adversarial:
            self.networks["discriminator"] = build_discriminator(config, sequences=self.sequences).to(device)
            self.optimizers["discriminator"] = torch.optim.Adam(self.networks["discriminator"].parameters(), lr=2e-4,
                                                                betas=(0.5, 0.999))
        epochs = decay_epochs or {"lite": 40, "paper": 1000}[config]
        if epochs < 1:
            raise InputError(f"decay_epochs must be at least 1, not {epochs}")
        for key, optimizer in self.optimizers.items():
            self.schedulers[key] = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda epoch, n=epochs: max(0.0, 1.0 - epoch / n) ** 0.9)

    # ----------------------------------------------------------------- data
    def make_batch(self, cases, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        counts = [tuple(frame_count(c.volumes[n]) for n in self.sequences) for c in cases]
        if any(f > 1 for frames in counts for f in frames):  # series: one frame layout per batch
            first = counts[int(rng.integers(len(cases)))]
            cases = [c for c, frames in zip(cases, counts) if frames == first]
            counts = [first]
        batch = random_slices(cases, rng, batch_size, self.sequences, self.sequences[:1], self.crop[self.config],
                              context=1, augment=False)
        if rng.random() < 0.5:  # one flip for the batch keeps every pair of sequences aligned
            for key in ("inputs", "mask", "labels"):
                batch[key] = np.ascontiguousarray(batch[key][..., ::-1])
        target, available, source = self.draw_sources(rng)
        del batch["targets"]
        batch["source"] = np.full(batch_size, source, np.int64)
        batch["target"] = np.full(batch_size, target, np.int64)
        batch["available"] = np.tile(available, (batch_size, 1))
        batch["frames"] = np.tile(np.asarray(counts[0], np.int64), (batch_size, 1))  # per sample: DDP shards rows
        return batch

    def draw_sources(self, rng: np.random.Generator) -> tuple[int, np.ndarray, int]:
        """(target, available sources as a 0/1 vector over the task's sequences, the source reconstructed).

        The paper trains on subjects with one to three of the four sequences silenced (section 4.1) and the
        public code passes every available sequence through the encoder ConvLSTM at once, so the fused
        representation is what inference from several sources sees. Here the number of sources k is
        uniform in 1 .. S - 1 and the k sources a uniform draw among the sequences other than the target:
        one step in 1 / (S - 1) is the paper's single-source X_{i -> j}, which the ranking uses."""
        count = len(self.sequences)
        target = int(rng.integers(count))
        others = [k for k in range(count) if k != target]
        chosen = rng.choice(others, size=int(rng.integers(1, count)), replace=False)
        available = np.zeros(count, np.int64)
        available[chosen] = 1
        return target, available, int(rng.choice(chosen))

    def _sources(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Every available source's frames, in the task's order (as the inference plan orders them), one
        after the other on the time axis: (B, sum of their T, 3, H, W)."""
        available = batch["available"][0]
        return torch.cat([self._stack(batch, "source", k) for k in range(len(self.sequences)) if available[k]], dim=1)

    def _stack(self, batch: dict[str, torch.Tensor], key: str, index: int | None = None) -> torch.Tensor:
        """The frames of the sequence named by ``batch[key]`` (or ``index``), as (B, T, 3, H, W) 3-slice
        stacks."""
        k = int(batch[key][0]) if index is None else index
        frames = [int(f) for f in batch["frames"][0]]
        start = 3 * sum(frames[:k])
        x = batch["inputs"][:, start:start + 3 * frames[k]]
        return x.reshape(x.shape[0], frames[k], 3, *x.shape[-2:])

    # ----------------------------------------------------------------- step
    def _similarity(self, fake: torch.Tensor, real: torch.Tensor, name: str, terms: dict) -> torch.Tensor:
        terms[f"{name}_l1"] = F.l1_loss(fake, real)
        total = LAMBDA_REC * terms[f"{name}_l1"]
        if self.perceptual is not None:  # every frame of a series as one image
            terms[f"{name}_perceptual"] = self.perceptual(fake.flatten(0, 1), real.flatten(0, 1))
            total = total + LAMBDA_PERCEPTUAL * terms[f"{name}_perceptual"]
        return total

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        generator = self.networks["generator"]
        generator.train()
        # batch indices count in the task's sequences; the generator's code is named (its code order is
        # models.seq2seq.SEQUENCE_ORDER), the shared discriminator's channels are the task's sequences
        target = int(batch["target"][0])
        source_name, target_name = self.sequences[int(batch["source"][0])], self.sequences[target]
        x_a, x_i, x_j = self._sources(batch), self._stack(batch, "source"), self._stack(batch, "target")
        terms: dict[str, torch.Tensor] = {}

        fake_j = generator(x_a, target_name, phases=x_j.shape[1])
        total = self._similarity(fake_j, x_j, "translation", terms)
        total = total + self._similarity(generator(x_a, source_name, phases=x_i.shape[1]), x_i, "self", terms)
        terms["cycle_l1"] = F.l1_loss(generator(fake_j, source_name, phases=x_i.shape[1]), x_i)
        total = total + LAMBDA_CYCLE * terms["cycle_l1"]
        if self.adversarial:
            discriminator = self.networks["discriminator"]
            discriminator.requires_grad_(False)
            score = discriminator(fake_j.flatten(0, 1), target)
            terms["adversarial"] = F.mse_loss(score, torch.ones_like(score))
            total = total + LAMBDA_ADV * terms["adversarial"]
        self.optimizers["generator"].zero_grad(set_to_none=True)
        total.backward()
        self.optimizers["generator"].step()
        result = {"loss": float(total.detach()), **{k: float(v.detach()) for k, v in terms.items()}}
        if self.adversarial:
            result["discriminator"] = self._discriminator_step(x_j.flatten(0, 1), fake_j.detach().flatten(0, 1),
                                                               target)
        return result

    def _discriminator_step(self, real: torch.Tensor, fake: torch.Tensor, target: int) -> float:
        discriminator = self.networks["discriminator"]
        discriminator.requires_grad_(True)
        discriminator.train()
        real_score, fake_score = discriminator(real, target), discriminator(fake, target)
        loss = 0.5 * (F.mse_loss(real_score, torch.ones_like(real_score))
                      + F.mse_loss(fake_score, torch.zeros_like(fake_score)))
        self.optimizers["discriminator"].zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers["discriminator"].step()
        return float(loss.detach())

    def predict(self, batch: dict[str, torch.Tensor]):
        """Centre slices, one row per frame of the target (a series target counts every frame)."""
        generator = self.networks["generator"]
        generator.eval()
        real = self._stack(batch, "target")
        with torch.no_grad():
            fake = generator(self._sources(batch), self.sequences[int(batch["target"][0])],
                             phases=real.shape[1])
        frames = real.shape[1]
        # the centre slice of each 3-slice stack is the one inference keeps
        return (fake[:, :, 1:2].flatten(0, 1), real[:, :, 1:2].flatten(0, 1),
                batch["mask"].repeat_interleave(frames, dim=0))


RECIPE = Seq2SeqRecipe
