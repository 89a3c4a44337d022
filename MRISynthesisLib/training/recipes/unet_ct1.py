"""U-Net cT1 training (thesis §2.5-2.6): T1 + T2 + FLAIR -> T1ce on 3D patches.

Losses (``loss=``): ``l1``, ``l2``, ``ssim`` (1 - SSIM, 11^3 Gaussian window, MONAI's ``SSIMLoss``),
``masked`` (L1 restricted to the foreground plus L1 on the enhancement mask) and ``mixed``, the
thesis's final choice (Eq. 4): L1 + (1 - SSIM) + L1 on the enhancement mask (cT1 - T1 > 0.3), weights 1.
Adam, learning rate 2e-4, betas (0.5, 0.99); early stopping after 20 validations without improvement
(``paper``; 5 for ``lite``, whose epochs are short). ``norm_kind`` and ``dropout`` may replace the
network's batch norm and dropout (both make a step depend on the batch split and the random stream, so
multi-process equality tests use instance norm and no dropout). Patches: 64^3 (``lite``, on the 2 mm phantom) or
128^3 (``paper``; the thesis trains on the whole 160 x 192 x 160 crop, which a CPU cannot).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import InputError
from ...models import build
from ...models.unet_ct1 import INPUT_SEQUENCES, OUTPUT_SEQUENCE, enhancement_mask
from ..sampling import random_patches
from .base import Recipe

LOSSES = ("mixed", "l1", "l2", "ssim", "masked")


class UNetCT1Recipe(Recipe):
    model = "unet-ct1"
    inputs, targets = INPUT_SEQUENCES, (OUTPUT_SEQUENCE,)
    sequences = (*INPUT_SEQUENCES, OUTPUT_SEQUENCE)
    normalization = "zscore"
    batch_size = {"lite": 2, "paper": 1}
    patch = {"lite": (64, 64, 64), "paper": (128, 128, 128)}
    inference_size = {"lite": (96, 96, 96), "paper": (160, 192, 160)}
    model_options = ("norm_kind", "dropout")

    def __init__(self, config: str, device: torch.device, amp: bool = False, *, anatomy: str | None = None,
                 loss: str = "mixed", **model_options) -> None:
        if (anatomy or "brain") != "brain":
            raise InputError(f"U-Net cT1 is a brain model (T1 + T2 + FLAIR -> T1ce); it cannot train on {anatomy}")
        super().__init__(config, device, amp, anatomy=anatomy)
        if loss not in LOSSES:
            raise InputError(f"unknown U-Net cT1 loss '{loss}'; use one of {', '.join(LOSSES)}")
        from monai.losses import SSIMLoss

        self.loss = loss
        unknown = set(model_options) - set(self.model_options)
        if unknown:
            raise InputError(f"unknown U-Net cT1 training options: {', '.join(sorted(unknown))}")
        self.networks["generator"] = build("unet-ct1", config, **model_options).to(device)
        self.optimizers["generator"] = torch.optim.Adam(self.networks["generator"].parameters(), lr=2e-4,
                                                        betas=(0.5, 0.99))
        self.ssim = SSIMLoss(spatial_dims=3, data_range=2.0, win_size=11)

    def make_batch(self, cases, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        return random_patches(cases, rng, batch_size, INPUT_SEQUENCES, (OUTPUT_SEQUENCE,), self.patch[self.config])

    def losses(self, prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        target = batch["targets"]
        terms: dict[str, torch.Tensor] = {}
        if self.loss in ("mixed", "l1"):
            terms["l1"] = F.l1_loss(prediction, target)
        if self.loss == "l2":
            terms["l2"] = F.mse_loss(prediction, target)
        if self.loss in ("mixed", "ssim"):
            terms["ssim"] = self.ssim(prediction.float(), target.float())
        if self.loss in ("mixed", "masked"):
            enhancing = enhancement_mask(batch["inputs"][:, :1], target)
            terms["enhancement_l1"] = (enhancing * (prediction - target).abs()).sum() / enhancing.sum().clamp(min=1)
        if self.loss == "masked":
            mask = batch["mask"]
            terms["foreground_l1"] = (mask * (prediction - target).abs()).sum() / mask.sum().clamp(min=1)
        return terms

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        generator, optimizer = self.networks["generator"], self.optimizers["generator"]
        generator.train()
        optimizer.zero_grad(set_to_none=True)
        prediction = generator(batch["inputs"])
        terms = self.losses(prediction, batch)
        total = sum(terms.values())
        total.backward()
        optimizer.step()
        return {"loss": float(total.detach()), **{k: float(v.detach()) for k, v in terms.items()}}

    def predict(self, batch: dict[str, torch.Tensor]):
        generator = self.networks["generator"]
        generator.eval()
        with torch.no_grad():
            return generator(batch["inputs"]), batch["targets"], batch["mask"]


RECIPE = UNetCT1Recipe
