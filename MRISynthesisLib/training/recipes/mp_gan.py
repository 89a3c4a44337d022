"""MP-GAN training (Haarburger et al., section 3): class-conditional DCGAN or WGAN on breast patches.

``variant="dcgan"``: binary cross-entropy, Adam 2e-4 with betas (0.5, 0.999) for both networks (the
DCGAN paper's settings, which section 3.1 adopts), one discriminator step per generator step.
``variant="wgan"``: the Wasserstein loss with weight clipping at 0.01 (the paper rejected the gradient
penalty as unstable), RMSProp 5e-5 and five critic steps per generator step (section 3.2, from Arjovsky
et al.). Settings live in ``models.mp_gan.TRAINING``; batch 64 in the paper, 16 in ``lite``.

Data: the patches of :mod:`MRISynthesisLib.patches` (each lesion's central axial slices,
``per_lesion="slices"``, as the paper's 2-3 patches per lesion; healthy breast), drawn with equal
probability per class present (the paper trains one GAN per class; one conditional GAN sees the rare
lesion classes as often as healthy tissue). Augmentation: the paper names none beyond its overlapping
patches; we add random left-right flips only (the two breasts are mirror images, so a flipped patch is
one the data could hold) and no vertical flips or rotations (skin and chest wall have a fixed
anterior-posterior side in axial patches). Each case's patches are extracted once, with a generator
seeded from the case name, so every process and every resume sees the same pool; the trainer keeps only
those patches (:meth:`prepare_case`), not the case's volumes, so hundreds of subjects fit in memory.
Patches of 32 x 32 on the 1.5 mm phantom (``lite``: 48 mm, about the paper's 64 x 64 at 0.7 mm) or
64 x 64 (``paper``).

Our addition: the generator that is validated and exported is an exponential moving average of the
trained generator's weights (decay :attr:`MPGANRecipe.average_decay`, through
``torch.optim.swa_utils.AveragedModel``; Yazici et al., ICLR 2019), as most GANs since are, with its
batch-norm statistics measured anew on its own outputs (``swa_utils.update_bn`` on fixed noise, the
"standing statistics" of BigGAN) before it is validated or saved: averaged weights do not match the
averaged statistics, and with those the average's patches were told apart every time. The paper
keeps one epoch's generator; ours oscillated so much that its validation 1-NN swung between 0.72 and
0.90 from one validation (every 250 steps) to the next, and which checkpoint was best became a matter
of luck. The adversary trains against the live generator, as in the paper.

Also ours, in ``lite`` only: both learning rates hold for the first half of the run (``--steps``) and
then fall linearly to 0 at its last step (:attr:`MPGANRecipe.decay_share`; the schedule of pix2pix and
CycleGAN). The paper's Adam settings give no schedule. At a constant rate a CPU-length run kept
oscillating to its end, and validation 1-NN stopped improving after about half of it. ``paper`` keeps
the rates constant. A resumed run plans the schedule from its own ``--steps``.

Validation: a GAN has no paired target, so PSNR says nothing about it. The paper keeps the epoch of
lowest FID; FID needs Inception weights that an offline run lacks, so the checkpoint kept as best.pt is
the one of lowest ``val_score``, the sum of two distances from the validation subjects' real patches,
each 0 at best:

* ``val_1nn``: the 1-NN two-sample accuracy (``gan_eval.one_nn_accuracy``, the paper's other measure,
  which Table 2 finds strongly correlated with FID) of generated against real patches, averaged over the
  classes, minus 0.5 (its ideal); it judges single patches and their diversity;
* ``val_washout_gap``: the absolute difference between the fractions of generated and real patches that
  wash out (``gan_eval.dce_statistics``), averaged over the lesion classes; it judges what the paper
  claims beyond looks, temporally consistent enhancement (malignant washout, benign persistence), which
  the 1-NN test on whole patches barely weighs (one DCE curve among 7 x S x S values).

Selecting by 1-NN alone kept a DCGAN whose malignant patches washed out 21 points less often than
real ones; its run had a checkpoint with both measures close. The real set is drawn once: every lesion's
centre patch (one per lesion, so no two real patches are neighbouring slices of one lesion, which would
pair up in the 1-NN test) and at most :data:`VALIDATION_HEALTHY` lesion-free patches; the 1-NN set is as
many generated patches per class from fixed noise, the washout fraction is measured on
:data:`WASHOUT_SAMPLES` generated patches per class (the real side has only a dozen or so lesions).
``evaluate-gan`` then measures the kept generator on held-out subjects that neither training nor this
choice saw.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn

from ...errors import InputError
from ...gan_eval import dce_statistics, one_nn_accuracy
from ...models import build
from ...models.mp_gan import CHANNELS, CLASSES, LESION_CLASSES, TRAINING, build_critic, build_discriminator
from ...patches import extract_patches
from ..data import Case
from .base import Recipe

VARIANTS = tuple(TRAINING)
#: lesion-free patches per validation case, and in the validation set (lesion classes keep every lesion)
VALIDATION_HEALTHY_PER_CASE = 4
VALIDATION_HEALTHY = 300
#: generated patches per lesion class whose washout fraction is compared with the real one
WASHOUT_SAMPLES = 256
#: noise batches (of 64) on which the averaged generator's batch-norm statistics are measured
STANDING_BATCHES = 16


class MPGANRecipe(Recipe):
    model = "mp-gan"
    inputs, targets, sequences = ("T2", "DCE"), ("T2", "DCE"), ("T2", "DCE")
    tasks = {"breast": (("T2", "DCE"), ("T2", "DCE"), ("T2", "DCE"))}
    anatomy = "breast"
    normalization = "percentile"
    phantom_resolution = {"lite": 1.5, "paper": 1.0}
    batch_size = {"lite": 16, "paper": 64}
    patience = {"lite": 1000, "paper": 1000}  # GAN training oscillates: keep the best, never stop early
    patch = {"lite": 32, "paper": 64}
    model_options = ("variant",)
    inference_network = "generator_average"
    #: weight of the running average per step: it spans about 1 / (1 - decay) = 1000 steps
    average_decay = 0.999
    #: share of the run, at its end, over which both learning rates fall linearly to 0 (0: constant)
    decay_share = {"lite": 0.5, "paper": 0.0}
    selection = ("val_score", False)
    validation_names = ("val_score", "val_1nn", *(f"val_1nn_{name}" for name in CLASSES), "val_washout_gap",
                        *(f"val_washout_gap_{name}" for name in LESION_CLASSES))
    selection_label = ("1-NN accuracy of generated against real validation patches (mean over classes) - 0.5 "
                       "+ gap in washout fraction (mean over lesion classes); 0 at best")
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
        # after the optimizers: the average is not trained, only updated
        self._average = AveragedModel(self.networks["generator"],
                                      multi_avg_fn=get_ema_multi_avg_fn(self.average_decay))
        self.networks[self.inference_network] = self._average.module.requires_grad_(False)
        self._statistics_stale = True  # the average changed since its batch-norm statistics were measured
        self._pools: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._centres: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # one patch per lesion, for validation

    def plan(self, total_steps: int, steps_per_epoch: int) -> None:
        """Both learning rates constant, then falling linearly to 0 over the last :attr:`decay_share` of
        the run's epochs (lite; pix2pix's schedule), so that the run ends with a generator that has
        settled instead of one caught mid-oscillation. ``paper`` keeps them constant, as the paper does."""
        share = self.decay_share[self.config]
        if share <= 0:
            return
        epochs = max(1, math.ceil(total_steps / steps_per_epoch))
        start = epochs - max(1, round(epochs * share))
        for key, optimizer in self.optimizers.items():
            self.schedulers[key] = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda epoch, a=start, b=epochs: 1.0 if epoch < a else max(0.0, (b - epoch) / (b - a)))

    def state_dict(self) -> dict:
        """As the base, with the averaged generator's own batch-norm statistics."""
        self._standing_statistics()
        return super().state_dict()

    def _standing_statistics(self) -> None:
        """Measure the averaged generator's batch-norm statistics on its own outputs from fixed noise, every
        class equally (the training generator's running statistics belong to other weights)."""
        average = self.networks[self.inference_network]
        if not self._statistics_stale:
            return  # a validation step's checkpoint: measured for the validation just before
        if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in average.modules()):
            return  # a stand-in without batch norm
        noise = torch.Generator().manual_seed(1)
        batches = [torch.randn(64, self.latent_size, generator=noise) for _ in range(STANDING_BATCHES)]
        with torch.no_grad():
            update_bn(batches, _EveryClass(average, len(CLASSES)), device=self.device)
        average.eval()
        self._statistics_stale = False

    def load_state_dict(self, state: dict) -> None:
        """As the base, and a resumed average goes on averaging (a fresh AveragedModel would overwrite it
        with the live weights at its first update)."""
        super().load_state_dict(state)
        if self.inference_network in state["networks"]:
            self._average.n_averaged.fill_(max(int(self._average.n_averaged), 1))
        self._statistics_stale = self.inference_network not in state["networks"]

    # ----------------------------------------------------------------- data
    def _pool(self, case) -> tuple[np.ndarray, np.ndarray]:
        if case.name not in self._pools:
            rng = np.random.default_rng(zlib.crc32(case.name.encode()))
            self._pools[case.name] = extract_patches(case.volumes, case.labels, case.organ_or_foreground, rng,
                                                     size=self.patch[self.config], healthy=self.healthy_per_case,
                                                     per_lesion="slices", covered=_covered(case))
        return self._pools[case.name]

    def prepare_case(self, case: Case) -> Case:
        """The case reduced to its name: its patches are extracted now and kept here (a breast case's
        volumes are ~30 MB, its patches ~1 MB), with its validation patches (one per lesion, a few
        lesion-free)."""
        self._pool(case)
        if case.name not in self._centres:
            rng = np.random.default_rng([zlib.crc32(case.name.encode()), 1])
            self._centres[case.name] = extract_patches(case.volumes, case.labels, case.organ_or_foreground, rng,
                                                       size=self.patch[self.config],
                                                       healthy=VALIDATION_HEALTHY_PER_CASE, per_lesion="centre",
                                                       covered=_covered(case))
        empty = np.zeros((0, 0, 0))
        return Case(case.name, {}, empty.astype(bool), empty.astype(np.uint8), case.meta)

    def _joined(self, cases) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """All patches of ``cases``, their classes and the indices of each class, built once per case list
        (concatenating every case's pool at every step cost more than the step itself)."""
        key = tuple(c.name for c in cases)
        if getattr(self, "_joined_key", None) != key:
            pools = [self._pool(c) for c in cases]
            patches = np.concatenate([p for p, _ in pools])
            classes = np.concatenate([c for _, c in pools])
            self._joined_key = key
            self._joined_value = patches, classes, [np.flatnonzero(classes == k) for k in range(len(CLASSES))]
        return self._joined_value

    def make_batch(self, cases, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        patches, classes, by_class = self._joined(cases)
        present = np.unique(classes)
        if len(present) == 0:
            raise InputError("the training cases give no patches (no breast foreground?)")
        drawn = present[rng.integers(len(present), size=batch_size)]
        chosen = np.array([rng.choice(by_class[c]) for c in drawn])
        x = patches[chosen].copy()
        flip = rng.random(batch_size) < 0.5
        x[flip] = x[flip][..., ::-1]
        return {"inputs": x, "labels": classes[chosen].astype(np.int64)}  # a GAN has no target or mask

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
        self._average.update_parameters(generator)
        self._statistics_stale = True
        return {"loss": float(generator_loss.detach()), "generator": float(generator_loss.detach()),
                "adversary": float(adversary_loss.detach())}

    # ----------------------------------------------------------- validation
    def validation_set(self, cases, seed: int, batch_size: int, n_batches: int) -> list:
        """The validation cases' real patches of each class (see the module's docstring); ``batch_size``
        and ``n_batches`` do not apply: the 1-NN test needs the whole set at once."""
        patches = np.concatenate([self._centres[c.name][0] for c in cases])
        classes = np.concatenate([self._centres[c.name][1] for c in cases])
        healthy = np.flatnonzero(classes == CLASSES.index("healthy"))
        rng = np.random.default_rng([seed, 2 ** 31])
        dropped = rng.permutation(healthy)[VALIDATION_HEALTHY:]
        keep = np.setdiff1d(np.arange(len(classes)), dropped)
        if np.bincount(classes[keep], minlength=len(CLASSES)).max(initial=0) < 2:
            raise InputError(f"the {len(cases)} validation subject(s) give fewer than two real patches of every "
                             "class, too few for the 1-NN test that picks the MP-GAN's best checkpoint; "
                             "train on more subjects")
        return [{"real": patches[keep], "classes": classes[keep]}]

    def validate(self, validation_set: list) -> dict:
        """Per class with at least two real validation patches: 1-NN accuracy and, for lesion classes, the
        washout-fraction gap; their means and ``val_score`` (NaN for a class without). The example is a
        real and a generated T1 post 1 patch of the first such class."""
        real, classes = validation_set[0]["real"], validation_set[0]["classes"]
        self._standing_statistics()
        generator = self.networks[self.inference_network]
        generator.eval()
        noise = torch.Generator().manual_seed(0)

        def generate(k: int, n: int) -> np.ndarray:
            z = torch.randn(n, self.latent_size, generator=noise).to(self.device)
            with torch.no_grad():
                return generator(z, torch.full((n,), k, dtype=torch.long, device=self.device)).float().cpu().numpy()

        scores, example = {}, None
        for k, name in enumerate(CLASSES):
            mine = real[classes == k]
            enough = len(mine) >= 2
            fake = generate(k, len(mine)) if enough else None
            scores[f"val_1nn_{name}"] = one_nn_accuracy(mine, fake) if enough else float("nan")
            if name in LESION_CLASSES:
                scores[f"val_washout_gap_{name}"] = abs(
                    dce_statistics(generate(k, WASHOUT_SAMPLES)).washout_fraction
                    - dce_statistics(mine).washout_fraction) if enough else float("nan")
            if enough and example is None:
                post1 = list(CHANNELS).index("T1_post1")
                example = (mine[0, post1], mine[0, post1], fake[0, post1])
        scores["val_1nn"] = _finite_mean(scores[f"val_1nn_{name}"] for name in CLASSES)
        gaps = [scores[f"val_washout_gap_{name}"] for name in LESION_CLASSES]
        scores["val_washout_gap"] = _finite_mean(gaps) if np.isfinite(gaps).any() else 0.0
        scores["val_score"] = scores["val_1nn"] - 0.5 + scores["val_washout_gap"]
        return {**scores, "example": example}


class _EveryClass(nn.Module):
    """The generator called on noise alone, the classes taken in turn (what ``update_bn`` can call)."""

    def __init__(self, generator: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.generator, self.n_classes = generator, n_classes

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z, torch.arange(len(z), device=z.device) % self.n_classes)


def _finite_mean(values) -> float:
    """The mean of the finite values (validation_set ensured one at least)."""
    return float(np.mean([v for v in values if np.isfinite(v)]))


RECIPE = MPGANRecipe


def _covered(case: Case) -> np.ndarray | None:
    """Where a folder case's T2 and DCE both hold data (None: everywhere, as in every phantom case)."""
    return None if case.inside is None else case.covers("T2", "DCE")
