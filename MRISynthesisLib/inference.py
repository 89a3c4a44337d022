"""Running a trained generator over a whole volume: device choice, mixed precision, batching, progress.

Three ways to cover a volume, one per model form:

* :func:`predict_slices` with ``context=0``: 2D models, axial slices in batches (IMPORTANT-Net,
  TC-MGAN); ``context=1``: 2.5D models, each slice with its two neighbours as channels (Seq2Seq), edge
  slices repeating the first/last one.
* :func:`predict_patches`: 3D models (U-Net cT1), overlapping patches blended with Gaussian weights by
  MONAI's ``sliding_window_inference`` (patches run on ``device``, the full output stays on the CPU so
  memory on the GPU does not grow with the volume).

Both take ``progress(fraction, message)``; returning ``False`` cancels: the work stops before the next
batch and :class:`Cancelled` is raised, so no half-filled volume ever reaches the caller. Inputs are
never modified. Batch sizes come from a memory budget (see :func:`batch_size_for`) unless given.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Callable, Sequence

import numpy as np
import torch

from .errors import InputError

Progress = Callable[[float, str], "bool | None"]
Predictor = Callable[[torch.Tensor], torch.Tensor]

#: Activation memory assumed per input voxel and network channel when sizing batches (float32 values,
#: the forward keeps a few feature maps of the widest level alive at once).
_BYTES_PER_VOXEL_CHANNEL = 4 * 3
CPU_BUDGET_BYTES = 1 << 30  # keeps a 512x512x300 volume well under 4 GiB peak on the CPU


class Cancelled(Exception):
    """The progress callback asked to stop; nothing was returned."""


def choose_device(device: str = "auto") -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; clear error if absent."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device '{device}' requested but no CUDA GPU is available (use --device cpu or auto)")
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise InputError(f"device '{device}' requested but only {torch.cuda.device_count()} GPU(s) exist")
        return torch.device(f"cuda:{index}")
    raise InputError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N")


def autocast(device: torch.device, enabled: bool = True):
    """Mixed precision on CUDA (bf16 where supported, else fp16); full float32 on the CPU."""
    if not enabled or device.type != "cuda":
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def _read_int(path: str) -> int | None:
    try:
        with open(path) as file:
            text = file.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _proc_kib(path: str, key: str) -> int | None:
    """A ``key: N kB`` line of a /proc file, in bytes (None where /proc does not exist)."""
    try:
        with open(path) as file:
            for line in file:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def cpu_headroom_bytes() -> int | None:
    """How much more memory this process may take: the least of what the system has available
    (``MemAvailable``), what the address-space limit (``ulimit -v``) leaves above the current virtual
    size, and what a cgroup memory limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``) leaves above
    its usage. None where none of these can be read (not Linux)."""
    try:
        import resource  # POSIX only: Windows has no address-space limit to read
    except ImportError:
        resource = None

    room = []
    available = _proc_kib("/proc/meminfo", "MemAvailable")
    if available is not None:
        room.append(available)
    soft = resource.getrlimit(resource.RLIMIT_AS)[0] if resource else None
    virtual = _proc_kib("/proc/self/status", "VmSize")
    if resource and soft != resource.RLIM_INFINITY and virtual is not None:
        room.append(soft - virtual)
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        cap, used = _read_int(limit), _read_int(usage)
        if cap is not None and used is not None and cap < 1 << 60:
            room.append(cap - used)
    return max(min(room), 0) if room else None


def cpu_budget_bytes() -> int:
    """The CPU activation budget: 1 GiB, or a quarter of the headroom when less is left (the rest of
    the pipeline, the allocator's slack and the output still need theirs), so a memory-limited run
    tiles finer instead of failing."""
    headroom = cpu_headroom_bytes()
    return CPU_BUDGET_BYTES if headroom is None else min(CPU_BUDGET_BYTES, headroom // 4)


def memory_budget(device: torch.device) -> int:
    """Bytes of activations one batch may take: free GPU memory / 2 on CUDA, :func:`cpu_budget_bytes` on the CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 2
    return cpu_budget_bytes()


def batch_size_for(sample_voxels: int, widest_channels: int, device: torch.device, *, limit: int = 64) -> int:
    """How many samples fit the memory budget: free GPU memory / 2 on CUDA, :func:`cpu_budget_bytes` on
    the CPU; at least one."""
    budget = memory_budget(device)
    per_sample = max(sample_voxels * widest_channels * _BYTES_PER_VOXEL_CHANNEL, 1)
    return int(max(1, min(limit, budget // per_sample)))


def _report(progress: Progress | None, fraction: float, message: str) -> None:
    if progress is not None and progress(min(max(fraction, 0.0), 1.0), message) is False:
        raise Cancelled(message)


def _check_input(volume: np.ndarray) -> np.ndarray:
    volume = np.asarray(volume)
    if volume.ndim != 4:
        raise InputError(f"inference input must be (channels, z, y, x), but its shape is {volume.shape}")
    if not np.isfinite(volume).all():
        raise InputError("inference input contains NaN or Inf values")
    return volume


#: what a slice is padded with, in training (a crop larger than its slice) and inference (up to the network's
#: size multiple) alike: the bottom of the normalised [-1, 1] range
PADDING = -1.0


def pad_to_multiple(volume: np.ndarray, multiple: int,
                    fill: float = PADDING) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Pad the in-plane axes of (channels, z, y, x) up to a multiple of ``multiple`` (networks with k
    stride-2 levels need 2^k) with ``fill``; returns the padded array and the (y, x) slices that cut the
    original back out.

    The fill is what training pads a crop larger than its slice with (``training.sampling``), -1, the
    bottom of the normalised range: a network trained on whole slices learns the edge between the slice
    and that padding, and meets another edge if inference pads otherwise. Padding each channel with its
    own minimum instead (until 2026-12-07) cost TC-MGAN trained on 128 x 128 slices up to 6.7 dB on T1ce."""
    height, width = volume.shape[-2:]
    pad_y, pad_x = (-height) % multiple, (-width) % multiple
    if not pad_y and not pad_x:
        return volume, (slice(None), slice(None))
    padded = np.full(volume.shape[:2] + (height + pad_y, width + pad_x), fill, np.float32)
    y0, x0 = pad_y // 2, pad_x // 2
    padded[..., y0:y0 + height, x0:x0 + width] = volume
    return padded, (slice(y0, y0 + height), slice(x0, x0 + width))


def predict_slices(predictor: Predictor, volume: np.ndarray, *, context: int = 0, batch_size: int | None = None,
                   device: str | torch.device = "auto", amp: bool = True, widest_channels: int = 64,
                   multiple: int = 1, progress: Progress | None = None) -> np.ndarray:
    """Apply a 2D (``context=0``) or 2.5D (``context=k``: 2k+1 slices per channel) predictor slice by slice.

    Args:
        predictor: (batch, channels x (2k+1), y, x) -> (batch, out_channels x (2k+1) or out_channels, y, x).
            A 2.5D output with 2k+1 slices per channel keeps its centre slice.
        volume: (channels, z, y, x), already normalised as the model expects.
        multiple: slices are padded to a multiple of this in y and x (:func:`pad_to_multiple`) and the
            prediction cut back.
    Returns:
        (out_channels, z, y, x) float32.
    """
    if multiple < 1:
        raise InputError(f"`multiple` must be at least 1, not {multiple}")
    volume, inside = pad_to_multiple(_check_input(volume), multiple)
    device = device if isinstance(device, torch.device) else choose_device(device)
    channels, depth, height, width = volume.shape  # padded
    window = 2 * context + 1
    batch = batch_size or batch_size_for(height * width * window, widest_channels, device)
    index = np.clip(np.arange(depth)[:, None] + np.arange(-context, context + 1)[None, :], 0, depth - 1)
    output: np.ndarray | None = None
    n_batches = math.ceil(depth / batch)
    _report(progress, 0.0, f"0/{depth} slices")
    for b, start in enumerate(range(0, depth, batch)):
        stop = min(start + batch, depth)
        # (slices, channels, window, y, x) -> (slices, channels * window, y, x): channel-major stacks
        stack = volume[:, index[start:stop]].transpose(1, 0, 2, 3, 4).reshape(stop - start, channels * window, height, width)
        with torch.no_grad(), autocast(device, amp):
            result = predictor(torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32)).to(device))
        result = result.float().cpu().numpy()
        if context and result.shape[1] % window == 0 and result.shape[1] >= window:
            result = result.reshape(result.shape[0], -1, window, height, width)[:, :, context]
        if output is None:
            output = np.empty((result.shape[1], depth, height, width), np.float32)
        output[:, start:stop] = result.transpose(1, 0, 2, 3)
        _report(progress, (b + 1) / n_batches, f"{stop}/{depth} slices")
    assert output is not None
    return np.ascontiguousarray(output[..., inside[0], inside[1]])


def fitting_patch(patch_size: tuple[int, ...], widest_channels: int, device: torch.device,
                  multiple: int) -> tuple[int, ...]:
    """``patch_size``, or a smaller one that fits the memory budget: the largest axis shrinks by
    ``multiple`` at a time, never below twice ``multiple`` (the smallest a fully convolutional network
    with that down-sampling still sees context in)."""
    budget = memory_budget(device)
    patch = list(patch_size)
    while int(np.prod(patch)) * widest_channels * _BYTES_PER_VOXEL_CHANNEL > budget:
        axis = int(np.argmax(patch))
        if patch[axis] - multiple < 2 * multiple:
            break
        patch[axis] -= multiple
    return tuple(patch)


def _windows_per_axis(size: int, patch: int, overlap: float) -> int:
    if size <= patch:
        return 1
    step = max(int(patch * (1 - overlap)), 1)
    return math.ceil((size - patch) / step) + 1


def predict_patches(predictor: Predictor, volume: np.ndarray, *, patch_size: Sequence[int], overlap: float = 0.5,
                    batch_size: int | None = None, device: str | torch.device = "auto", amp: bool = True,
                    widest_channels: int = 32, multiple: int = 1, progress: Progress | None = None) -> np.ndarray:
    """Apply a 3D predictor over overlapping patches blended with Gaussian weights (MONAI).

    An axis shorter than a patch is padded by repeating its edge voxels (MONAI's ``replicate``), not with
    MONAI's default 0, which on z-scored inputs is the tissue's mean and would frame a small field of view
    in a tissue the network never saw; the output has the input's spatial shape. With
    ``multiple`` > 1 (the network's down-sampling factor) and no ``batch_size``, a patch too big for
    the memory budget is made smaller (:func:`fitting_patch`) rather than run out of memory.
    """
    from monai.inferers import sliding_window_inference

    volume = _check_input(volume)
    device = device if isinstance(device, torch.device) else choose_device(device)
    patch_size = tuple(int(p) for p in patch_size)
    if len(patch_size) != 3 or min(patch_size) < 1:
        raise InputError(f"patch size must be 3 positive integers, not {patch_size}")
    if not 0 <= overlap < 1:
        raise InputError(f"overlap must be in [0, 1), not {overlap}")
    if batch_size is None and multiple > 1:
        patch_size = fitting_patch(patch_size, widest_channels, device, multiple)
    batch = batch_size or batch_size_for(int(np.prod(patch_size)), widest_channels, device, limit=8)
    total = int(np.prod([_windows_per_axis(s, p, overlap) for s, p in zip(volume.shape[1:], patch_size)]))
    n_batches = math.ceil(total / batch)
    done = [0]

    def run(patches: torch.Tensor) -> torch.Tensor:
        with autocast(device, amp):
            out = predictor(patches.to(device)).float()
        done[0] += 1
        _report(progress, done[0] / n_batches, f"{min(done[0] * batch, total)}/{total} patches")
        return out

    _report(progress, 0.0, f"0/{total} patches")
    inputs = torch.from_numpy(np.ascontiguousarray(volume[None], dtype=np.float32))
    with torch.no_grad():
        result = sliding_window_inference(inputs, patch_size, batch, run, overlap=overlap, mode="gaussian",
                                          padding_mode="replicate", sw_device=device, device=torch.device("cpu"))
    return result[0].numpy().astype(np.float32, copy=False)
