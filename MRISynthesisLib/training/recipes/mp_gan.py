"""MP-GAN training (Haarburger et al., section 3): class-conditional DCGAN or WGAN on breast patches.

``variant="dcgan"``: binary cross-entropy, Adam 2e-4 with betas (0.5, 0.999) for both networks (the
DCGAN paper's settings, which section 3.1 adopts), one discriminator step per generator step.
``variant="wgan"``: the Wasserstein loss with weight clipping at 0.01 (the paper rejected the gradient
penalty as unstable), RMSProp 5e-5 and five critic steps per generator step (section 3.2, from Arjovsky
et al.). Settings live in ``models.mp_gan.TRAINING``; batch 64 in the paper, 16 in ``lite``.

Data: the patches of :mod:`MRISynthesisLib.patches` (lesion centres and healthy breast), drawn with equal
probability per class present (the paper trains one GAN per class; one conditional GAN sees the rare
lesion classes as often as healthy tissue), random flips. Each case's patches are extracted once, with
a generator seeded from the case name, so every process and every resume sees the same pool. Patches of
32 x 32 on the 1.5 mm phantom (``lite``: 48 mm, about the paper's 64 x 64 at 0.7 mm) or 64 x 64 (``paper``).

Validation: a GAN has no paired target, so :meth:`predict` returns generated patches for the batch's
classes (fixed noise) beside the real ones; the trainer's PSNR/SSIM on them is only a sanity signal.
The measures that matter (1-NN accuracy, washout statistics, FID) are ``mri-synthesis evaluate-gan``'s.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import InputError
from ...models import build
from ...models.mp_gan import TRAINING, build_critic, build_discriminator
from ...patches import extract_patches
from .base import Recipe

VARIANTS = tuple(TRAINING)


class MPGANRecipe(Recipe):
    model = "mp-gan"
    inputs, targets, sequences = ("T2", "DCE"), ("T2", "DCE"), ("T2", "DCE")
    tasks = {"breast": (("T2", "DCE"), ("T2", "DCE"), ("T2", "DCE"))}
    anatomy = "breast"
    normalization = "percentile"
    phantom_resolution = {"lite": 1.5, "paper": 1.0}
    batch_size = {"lite": 16, "paper": 64}
    patience = {"lite": 1000, "paper": 1000}  # validation PSNR does not measure a GAN: no early stop
    patch = {"lite": 32, "paper": 64}
    model_options = ("variant",)
    build_overrides = {config: {"patch_size": size} for config, size in patch.items()}

    @classmethod
    def file_stem(cls, anatomy: str, config: str, recipe_options: dict) -> str:
        """Both variants are bundled, so the name says which: ``mp-gan-breast-lite-dcgan``."""
        return f"{cls.model}-{anatomy}-{config}-{recipe_options.get('variant', 'dcgan')}"

    def __init__(self, config: str, device: torch.device, amp: bool = False, *, anatomy: str | None = None,
                 variant: str = "dcgan", healthy_per_case: int = 24) -> None:
        if (anatomy or "breast") != "breast":
            raise InputError(f"the MP-GAN makes breast patches; it cannot train on {anatomy}")
        if variant not in VARIANTS:
            raise InputError(f"unknown MP-GAN variant '{variant}'; use one of {', '.join(VARIANTS)}")
        super().__init__(config, device, amp, anatomy=anatomy)
        self.variant, self.settings, self.healthy_per_case = variant, TRAINING[variant], healthy_per_case
        size = self.patch[config]
        self.networks["generator"] = build("mp-gan", config, variant=variant, patch_size=size).to(device)
        self.latent_size = self.networks["generator"].latent_size
        adversary = (build_discriminator if variant == "dcgan" else build_critic)(config, patch_size=size)
        self.networks["adversary"] = adversary.to(device)
        for key, net in self.networks.items():
            if self.settings["optimizer"] == "adam":
                self.optimizers[key] = torch.optim.Adam(net.parameters(), lr=self.settings["lr"],
                                                        betas=self.settings["betas"])
            else:
                self.optimizers[key] = torch.optim.RMSprop(net.parameters(), lr=self.settings["lr"])
        self._pools: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    # ----------------------------------------------------------------- data
    def _pool(self, case) -> tuple[np.ndarray, np.ndarray]:
        if case.name not in self._pools:
            rng = np.random.default_rng(zlib.crc32(case.name.encode()))
            self._pools[case.name] = extract_patches(case.volumes, case.labels, case.mask, rng,
                                                     size=self.patch[self.config], healthy=self.healthy_per_case)
        return self._pools[case.name]

    def make_batch(self, cases, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        pools = [self._pool(c) for c in cases]
        patches = np.concatenate([p for p, _ in pools])
        classes = np.concatenate([c for _, c in pools])
        present = np.unique(classes)
        if len(present) == 0:
            raise InputError("the training cases give no patches (no breast foreground?)")
        drawn = present[rng.integers(len(present), size=batch_size)]
        chosen = np.array([rng.choice(np.flatnonzero(classes == c)) for c in drawn])
        x = patches[chosen].copy()
        flip = rng.random(batch_size) < 0.5
        x[flip] = x[flip][..., ::-1]
        return {"inputs": x, "targets": x, "labels": classes[chosen].astype(np.int64),
                "mask": np.ones((batch_size, 1) + x.shape[2:], np.float32)}

    # ----------------------------------------------------------------- step
    def _noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.latent_size, device=self.device)

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        generator, adversary = self.networks["generator"], self.networks["adversary"]
        real, classes = batch["inputs"], batch["labels"]
        generator.train()
        adversary.train()
        adversary.requires_grad_(True)
        for _ in range(self.settings["critic_steps"]):
            with torch.no_grad():
                fake = generator(self._noise(len(real)), classes)
            on_real, on_fake = adversary(real, classes), adversary(fake, classes)
            if self.variant == "dcgan":
                adversary_loss = 0.5 * (F.binary_cross_entropy_with_logits(on_real, torch.ones_like(on_real))
                                        + F.binary_cross_entropy_with_logits(on_fake, torch.zeros_like(on_fake)))
            else:
                adversary_loss = on_fake.mean() - on_real.mean()
            self.optimizers["adversary"].zero_grad(set_to_none=True)
            adversary_loss.backward()
            self.optimizers["adversary"].step()
            if self.variant == "wgan":
                with torch.no_grad():
                    for p in adversary.parameters():
                        p.clamp_(-self.settings["clip"], self.settings["clip"])
        adversary.requires_grad_(False)
        judged = adversary(generator(self._noise(len(real)), classes), classes)
        generator_loss = (F.binary_cross_entropy_with_logits(judged, torch.ones_like(judged)) if self.variant == "dcgan"
                          else -judged.mean())
        self.optimizers["generator"].zero_grad(set_to_none=True)
        generator_loss.backward()
        self.optimizers["generator"].step()
        return {"loss": float(generator_loss.detach()), "generator": float(generator_loss.detach()),
                "adversary": float(adversary_loss.detach())}

    def predict(self, batch: dict[str, torch.Tensor]):
        generator = self.networks["generator"]
        generator.eval()
        noise = torch.randn(len(batch["inputs"]), self.latent_size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            fake = generator(noise.to(self.device), batch["labels"])
        return fake, batch["inputs"], batch["mask"]


RECIPE = MPGANRecipe
