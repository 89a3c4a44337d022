"""TC-MGAN training (paper section 2 and 3.1): T2 -> FLAIR, T1ce, T1 with one label-conditioned generator.

Losses exactly as Eq. 6-7 with the weights of section 3.1 (``models.tc_mgan.LOSS_WEIGHTS``):

* critic: -D_src(x, y_c) + D_src(x, G(x, c)) + lambda_cls = 10 x cross-entropy of D_cls on the real y_c
  + lambda_gp = 100 x gradient penalty (WGAN-GP, at interpolates of real and fake for the same T2);
* generator: -D_src(x, G(x, c)) + lambda_cls = 10 x cross-entropy of D_cls on G(x, c) + lambda_l1 = 0.1 x L1
  + lambda_seg = 50 x Dice(S(G(x, c), c), whole-tumour mask), S frozen.

A random target label c per sample (section 2.3). Critic steps per generator step: the paper does not
say; ``critic_steps`` = 5 is the WGAN-GP default (each critic step on its own slice of the batch would
change the data; we reuse the step's batch, as StarGAN-style code does). Adam 2e-4 (betas 0.5, 0.999:
the paper names only the rate) for G and D, stepped down to 1e-4, 5e-5 and 1e-5 at 30 %, 60 % and 90 %
of ``epochs`` (the paper's 30/60/90 of 100 epochs).

The segmenter: the paper pre-trains S on the training set (30 epochs, Adam 1e-3, Dice) and keeps it
fixed while training the GAN. One command trains everything here: the first ``segmenter_steps`` steps
of a run train S on real target slices with Dice (the GAN waits), then S is frozen for good; its state
and the recipe's step count are in every checkpoint, so a resumed run continues the same schedule.

The generator's warm-up (ours, ``lite`` only): after the segmenter, the first ``reconstruction_steps``
generator steps minimise L1 alone, then the GAN of Eq. 6-7 takes over unchanged. The paper trains 100
epochs at batch 64 (about 40,000 steps on BraTS); a CPU run of a few thousand steps at batch 8 under
Eq. 7, where L1 weighs 0.1 beside the critic, never left its first blurred guess on the phantom
(validation PSNR best at 20.2 dB, output a grey blob), so the ``lite`` GAN starts from a generator that
already maps T2 to each target. ``paper`` keeps the paper's schedule (no warm-up). The checkpoint kept
is the best on validation PSNR, warm-up or GAN phase; the model card names the step.

Slices: 128 x 128, the paper's size, in both configurations: a whole 2 mm phantom slice (about 98 x 116)
padded as inference pads it (``inference.PADDING``). ``lite`` trained on 64 x 64 crops until 2026-12-07;
with whole slices the same recipe and steps made held-out FLAIR 2.6 dB better (20.61 -> 23.18 dB; the network
sees where CSF and oedema lie in the whole head, which T2 alone does not tell apart). Intensities z-scored in the
foreground and scaled to [-1, 1] (the paper scales each slice linearly to [-1, 1]; per-volume statistics keep
the relative contrast between slices).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import InputError
from ...models import build
from ...models.tc_mgan import LOSS_WEIGHTS, SOURCE_SEQUENCE, TARGET_SEQUENCES, build_critic, build_segmenter, dice_loss
from ..losses import gradient_penalty
from ..sampling import random_slices
from .base import Recipe


def _step_factor(epoch: int, epochs: int) -> float:
    """2e-4 until 30 % of the epochs, then 1e-4, 5e-5 and 1e-5 after 60 % and 90 % (as factors of 2e-4)."""
    fraction = epoch / epochs
    return 1.0 if fraction < 0.3 else 0.5 if fraction < 0.6 else 0.25 if fraction < 0.9 else 0.05


class TCMGANRecipe(Recipe):
    model = "tc-mgan"
    inputs, targets = (SOURCE_SEQUENCE,), TARGET_SEQUENCES
    sequences = (SOURCE_SEQUENCE, *TARGET_SEQUENCES)
    normalization = "zscore"
    batch_size = {"lite": 8, "paper": 64}
    patience = {"lite": 10, "paper": 20}
    size = {"lite": (128, 128), "paper": (128, 128)}
    inference_size = {"lite": None, "paper": None}
    loss_names = ("loss", "segmenter_dice_loss", "l1", "adversarial", "classification", "segmentation", "critic",
                  "gradient_penalty")
    segmenter_warm_up = {"lite": 200, "paper": 3000}
    reconstruction_warm_up = {"lite": 12000, "paper": 0}

    @classmethod
    def warm_up_steps(cls, config: str, options: dict) -> int:
        """Steps before the GAN of a run with these recipe ``options``: the segmenter's, then L1 alone."""
        return (options.get("segmenter_steps", cls.segmenter_warm_up[config])
                + options.get("reconstruction_steps", cls.reconstruction_warm_up[config]))

    def __init__(self, config: str, device: torch.device, amp: bool = False, *, anatomy: str | None = None,
                 critic_steps: int = 5, segmenter_steps: int | None = None, reconstruction_steps: int | None = None,
                 epochs: int | None = None) -> None:
        if (anatomy or "brain") != "brain":
            raise InputError(f"TC-MGAN is a brain model (T2 -> FLAIR, T1ce, T1); it cannot train on {anatomy}")
        super().__init__(config, device, amp, anatomy=anatomy)
        if critic_steps < 1:
            raise InputError(f"critic_steps must be at least 1, not {critic_steps}")
        self.critic_steps = critic_steps
        self.segmenter_steps = self.segmenter_warm_up[config] if segmenter_steps is None else segmenter_steps
        self.reconstruction_steps = (self.reconstruction_warm_up[config] if reconstruction_steps is None
                                     else reconstruction_steps)
        for name in ("segmenter_steps", "reconstruction_steps"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be 0 or more, not {getattr(self, name)}")
        if self.reconstruction_steps:
            self.notes.append(f"the generator's first {self.reconstruction_steps} steps minimise L1 alone (a warm-up "
                              "that is not in the paper), then Eq. 6-7")
        self.steps_done = 0
        size = self.size[config][0]
        self.networks["generator"] = build("tc-mgan", config).to(device)
        self.networks["critic"] = build_critic(config, image_size=size).to(device)
        self.networks["segmenter"] = build_segmenter(config).to(device)
        for key, lr in (("generator", 2e-4), ("critic", 2e-4)):
            self.optimizers[key] = torch.optim.Adam(self.networks[key].parameters(), lr=lr, betas=(0.5, 0.999))
            self.schedulers[key] = torch.optim.lr_scheduler.LambdaLR(
                self.optimizers[key], lambda e, n=epochs or {"lite": 40, "paper": 100}[config]: _step_factor(e, n))
        self.optimizers["segmenter"] = torch.optim.Adam(self.networks["segmenter"].parameters(), lr=1e-3)
        if self.segmenter_steps == 0:
            self.networks["segmenter"].freeze()

    # ----------------------------------------------------------------- data
    def make_batch(self, cases, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        batch = random_slices(cases, rng, batch_size, self.inputs, self.targets, self.size[self.config])
        batch["target"] = rng.integers(len(self.targets), size=batch_size).astype(np.int64)
        return batch

    @staticmethod
    def _chosen(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """y_c: each sample's real slice of its drawn target (B, 1, H, W)."""
        index = batch["target"].view(-1, 1, 1, 1).expand(-1, 1, *batch["targets"].shape[2:])
        return batch["targets"].gather(1, index)

    # ----------------------------------------------------------------- steps
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        self.steps_done += 1
        if self.steps_done <= self.segmenter_steps:
            return self._segmenter_step(batch)
        if not self.networks["segmenter"].frozen:
            self.networks["segmenter"].freeze()
        if self.steps_done <= self.final_phase_start():
            return self._reconstruction_step(batch)
        return self._gan_step(batch)

    def _reconstruction_step(self, batch) -> dict[str, float]:
        """The warm-up: L1 between G(x, c) and the real y_c, the critic untouched."""
        generator = self.networks["generator"]
        generator.train()
        loss = F.l1_loss(generator(batch["inputs"], batch["target"]), self._chosen(batch))
        self.optimizers["generator"].zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers["generator"].step()
        return {"loss": float(loss.detach()), "l1": float(loss.detach())}

    def _segmenter_step(self, batch) -> dict[str, float]:
        segmenter = self.networks["segmenter"]
        segmenter.train()
        tumour = (batch["labels"] > 0).float()
        loss = dice_loss(segmenter(self._chosen(batch), batch["target"]), tumour)
        self.optimizers["segmenter"].zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers["segmenter"].step()
        return {"loss": float(loss.detach()), "segmenter_dice_loss": float(loss.detach())}

    def _gan_step(self, batch) -> dict[str, float]:
        generator, critic, segmenter = (self.networks[k] for k in ("generator", "critic", "segmenter"))
        t2, real, target = batch["inputs"], self._chosen(batch), batch["target"]
        weights = LOSS_WEIGHTS
        generator.train()
        critic.train()
        critic.requires_grad_(True)
        with torch.no_grad():
            fake = generator(t2, target)
        for _ in range(self.critic_steps):
            on_real, on_fake = critic(t2, real), critic(t2, fake)
            penalty = gradient_penalty(lambda y: critic(t2, y).value, real, fake)
            critic_loss = (on_fake.value.mean() - on_real.value.mean()
                           + weights["cls"] * F.cross_entropy(on_real.logits, target) + weights["gp"] * penalty)
            self.optimizers["critic"].zero_grad(set_to_none=True)
            critic_loss.backward()
            self.optimizers["critic"].step()

        critic.requires_grad_(False)
        fake = generator(t2, target)
        judged = critic(t2, fake)
        terms = {"adversarial": -judged.value.mean(), "classification": F.cross_entropy(judged.logits, target),
                 "l1": F.l1_loss(fake, real),
                 "segmentation": dice_loss(segmenter(fake, target), (batch["labels"] > 0).float())}
        total = (terms["adversarial"] + weights["cls"] * terms["classification"] + weights["l1"] * terms["l1"]
                 + weights["seg"] * terms["segmentation"])
        self.optimizers["generator"].zero_grad(set_to_none=True)
        total.backward()
        self.optimizers["generator"].step()
        return {"loss": float(total.detach()), "critic": float(critic_loss.detach()),
                "gradient_penalty": float(penalty.detach()), **{k: float(v.detach()) for k, v in terms.items()}}

    def predict(self, batch: dict[str, torch.Tensor]):
        generator = self.networks["generator"]
        generator.eval()
        with torch.no_grad():
            return generator(batch["inputs"], batch["target"]), self._chosen(batch), batch["mask"]

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {**super().state_dict(), "steps_done": self.steps_done}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.steps_done = int(state["steps_done"])
        if self.steps_done >= self.segmenter_steps:
            self.networks["segmenter"].freeze()

    def final_phase_start(self) -> int:
        """The GAN begins after both warm-ups."""
        return self.warm_up_steps(self.config, {"segmenter_steps": self.segmenter_steps,
                                                "reconstruction_steps": self.reconstruction_steps})

    def end_of_epoch(self) -> None:
        """The GAN's rate schedule counts GAN epochs: neither warm-up uses it up."""
        if self.steps_done > self.final_phase_start():
            for key in ("generator", "critic"):
                self.schedulers[key].step()


RECIPE = TCMGANRecipe
