"""IMPORTANT-Net training (paper section 3.4 and 4.2): n registered sequences -> one missing sequence.

Losses (Eq. 3-7, weights of section 4.2): the conditional GAN of Eq. 3-4 (binary cross-entropy on the
patch discriminator's logits; the generator uses the non-saturating form, -log D(G), the usual reading of
log(1 - D(G))), lambda_1 = 100 x L1 between the synthesized and the real target, lambda_2 = 25 x the L1
of every reconstruction branch against its own input (Eq. 1), and lambda_3 = 200 x the VGG19 perceptual
loss on the five max-pool outputs weighted 1/16 ... 1 (Eq. 5-6). Adam at 1e-3, multiplied by 0.9 every 5
epochs, for the generator and the discriminator; betas (0.5, 0.999), the GAN setting of the authors'
code (the paper names only the rate). Batch 16 (paper) or 4 (``lite``).

Without VGG19's ImageNet file training stops with a message naming it, unless ``--without-perceptual``
(the term is then left out and the run says so).

Tasks: brain T1 + T1ce + FLAIR -> T2 (BraTS, section 4.1) and breast T1 + DWI + DCE -> T2. The breast
series are 4D; the model sees one frame of each (:data:`FRAMES`): the highest b-value of the DWI (the
diffusion contrast radiologists read) and the first post-contrast phase of the DCE (peak enhancement of
a typical lesion). :func:`select_frames` makes that choice, and inference must use it too.

Slices: random crops of 128 x 128 (``lite``, 2 mm phantom) or the paper's 224 x 224 around the
foreground, z-scored in the foreground and scaled to [-1, 1] (the authors' fixed (x - 1500) / 1500
assumes one scanner's intensity range, which a user's data do not share).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import InputError
from ...inputs import frame_index
from ...models import build
from ...models.important_net import build_discriminator
from ..data import Case
from ..losses import VGG19Perceptual, check_perceptual_choice
from ..sampling import random_slices
from .base import Recipe

#: which frame of each 4D series the model sees: DWI's highest b-value, DCE's first post-contrast phase
FRAMES = {"DWI": -1, "DCE": 1}
LAMBDA_L1, LAMBDA_RECONSTRUCTION, LAMBDA_PERCEPTUAL = 100.0, 25.0, 200.0


def select_frames(volumes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The 3D arrays the model sees: 4D series reduced to the frame of :data:`FRAMES`, 3D ones as they are
    (the pipeline makes the same choice on volumes, from the manifest entry's ``frames``)."""
    out = {}
    for name, array in volumes.items():
        if array.ndim == 4:
            array = array[frame_index(name, array.shape[0], FRAMES, "IMPORTANT-Net")]
        elif array.ndim != 3:
            raise InputError(f"{name} must be 3D or a 4D series, not {array.ndim}D")
        out[name] = array
    return out


class ImportantNetRecipe(Recipe):
    model = "important-net"
    inputs, targets = ("T1", "T1ce", "FLAIR"), ("T2",)
    sequences = ("T1", "T1ce", "FLAIR", "T2")
    tasks = {"brain": (("T1", "T1ce", "FLAIR"), ("T2",), ("T1", "T1ce", "FLAIR", "T2")),
             "breast": (("T1", "DWI", "DCE"), ("T2",), ("T1", "DWI", "DCE", "T2"))}
    normalization = "zscore"
    batch_size = {"lite": 4, "paper": 16}
    patience = {"lite": 10, "paper": 20}
    size = {"lite": (128, 128), "paper": (224, 224)}
    uses_perceptual = True
    frames = FRAMES

    def __init__(self, config: str, device: torch.device, amp: bool = False, *, anatomy: str | None = None,
                 perceptual: str = "imagenet") -> None:
        super().__init__(config, device, amp, anatomy=anatomy)
        check_perceptual_choice(perceptual)
        self.perceptual = None if perceptual == "off" else VGG19Perceptual(perceptual).to(device)
        if perceptual == "off":
            self.notes.append("training without the VGG19 perceptual term (lambda_3 = 200) (--without-perceptual)")
        self.networks["generator"] = build("important-net", config, n_inputs=len(self.inputs)).to(device)
        self.networks["discriminator"] = build_discriminator(config, n_inputs=len(self.inputs)).to(device)
        for key in ("generator", "discriminator"):
            self.optimizers[key] = torch.optim.Adam(self.networks[key].parameters(), lr=1e-3, betas=(0.5, 0.999))
            self.schedulers[key] = torch.optim.lr_scheduler.StepLR(self.optimizers[key], step_size=5, gamma=0.9)
        self._three_d: dict[str, Case] = {}

    # ----------------------------------------------------------------- data
    def _as_3d(self, case: Case) -> Case:
        """The case with its 4D series reduced to the frames the model sees (kept per case)."""
        if case.name not in self._three_d:
            self._three_d[case.name] = replace(case, volumes=select_frames(case.volumes))
        return self._three_d[case.name]

    def make_batch(self, cases, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        return random_slices([self._as_3d(c) for c in cases], rng, batch_size, self.inputs, self.targets,
                             self.size[self.config])

    # ----------------------------------------------------------------- step
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        generator, discriminator = self.networks["generator"], self.networks["discriminator"]
        sources, real = batch["inputs"], batch["targets"]
        generator.train()
        discriminator.train()
        output = generator(sources)
        fake = output.synthesized

        discriminator.requires_grad_(False)
        judged = discriminator(sources, fake)
        terms = {"adversarial": F.binary_cross_entropy_with_logits(judged, torch.ones_like(judged)),
                 "l1": F.l1_loss(fake, real),
                 "reconstruction": F.l1_loss(output.reconstructions, sources, reduction="none").mean((0, 2, 3)).sum()}
        total = terms["adversarial"] + LAMBDA_L1 * terms["l1"] + LAMBDA_RECONSTRUCTION * terms["reconstruction"]
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual(fake, real)
            total = total + LAMBDA_PERCEPTUAL * terms["perceptual"]
        self.optimizers["generator"].zero_grad(set_to_none=True)
        total.backward()
        self.optimizers["generator"].step()

        discriminator.requires_grad_(True)
        on_real, on_fake = discriminator(sources, real), discriminator(sources, fake.detach())
        d_loss = 0.5 * (F.binary_cross_entropy_with_logits(on_real, torch.ones_like(on_real))
                        + F.binary_cross_entropy_with_logits(on_fake, torch.zeros_like(on_fake)))
        self.optimizers["discriminator"].zero_grad(set_to_none=True)
        d_loss.backward()
        self.optimizers["discriminator"].step()
        return {"loss": float(total.detach()), "discriminator": float(d_loss.detach()),
                **{k: float(v.detach()) for k, v in terms.items()}}

    def predict(self, batch: dict[str, torch.Tensor]):
        generator = self.networks["generator"]
        generator.eval()
        with torch.no_grad():
            return generator(batch["inputs"]).synthesized, batch["targets"], batch["mask"]


RECIPE = ImportantNetRecipe
