"""Face images for training: preprocessing shared with serving, augmentation, balanced epochs.

Images are held once as a uint8 tensor (N, 3, S, S) at the model's size; a batch is augmented
per image with torchvision transforms v2 (seed 001: ColorJitter, GaussianBlur, RandomPerspective,
RandomErasing) and normalised with ImageNet statistics.

Balanced epochs (``--balance``): :class:`BalancedSampler` draws ``target`` images per class.
A class smaller than its target contributes every image once plus repeats; repeats are yielded
as ``index + N`` so the dataset knows them and, with ``--aggressive``, augments them harder.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_gray3(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> the same shape, grey replicated (ITU-R 601 luma, as OpenCV)."""
    y = images[..., 0] * 0.299 + images[..., 1] * 0.587 + images[..., 2] * 0.114
    y = np.clip(np.rint(y), 0, 255).astype(np.uint8)
    return np.repeat(y[..., None], 3, axis=-1)


def as_image_batch(x, *, what: str = "image") -> np.ndarray:
    """Serving/raw input -> (N, H, W, 3) uint8: accepts (H, W), (H, W, 1|3|4), (N, H, W), (N, H, W, C),
    uint8 or floats (0-1 or 0-255). Raises ValueError saying what shape was expected."""
    a = np.asarray(x)
    if a.dtype == object:  # nested lists as MLflow hands over a "ragged" tensor input
        try:
            a = np.asarray(a.tolist(), dtype=np.float32)
        except (ValueError, TypeError):
            raise ValueError(f"{what}: not a regular array of pixels (ragged rows, or images of "
                             "different sizes in one request)") from None
    if a.ndim == 2:
        a = a[None, ..., None]                 # (H, W) -> (1, H, W, 1)
    elif a.ndim == 3:
        a = a[None] if a.shape[-1] in (1, 3, 4) else a[..., None]  # (H, W, C) or (N, H, W)
    if a.ndim != 4 or a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{what}: expected (H, W, 3) or (N, H, W, 3) pixels, got shape {np.shape(x)}")
    if a.shape[1] < 8 or a.shape[2] < 8:
        raise ValueError(f"{what}: images must be at least 8x8 pixels, got {a.shape[1]}x{a.shape[2]}")
    if a.dtype != np.uint8:
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            raise ValueError(f"{what}: pixels hold NaN or infinite values")
        if a.max(initial=0.0) <= 1.0:
            a = a * 255.0
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    elif a.shape[-1] == 4:
        a = a[..., :3]                          # RGBA -> RGB
    return a


def resize_batch(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, size, size, 3) uint8 (area interpolation when shrinking)."""
    import cv2

    if images.shape[1] == size and images.shape[2] == size:
        return images
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, im in enumerate(images):
        interp = cv2.INTER_AREA if im.shape[0] > size else cv2.INTER_LINEAR
        out[i] = cv2.resize(im, (size, size), interpolation=interp)
    return out


def preprocess(images, size: int, grayscale: bool) -> torch.Tensor:
    """Raw pixels -> the model's input (N, 3, size, size) float32, as in training (no augmentation).

    A model trained on grayscale images (FER2013) sees colour inputs as grey, like its data.
    """
    a = as_image_batch(images)
    if grayscale:
        a = to_gray3(a)
    a = resize_batch(a, size)
    x = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2)  # (N, H, W, 3) -> (N, 3, H, W)
    return normalise(x)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 normalised with ImageNet mean and std."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x.float() / 255.0 - mean) / std


def augmentation(strength: str):
    """The per-image training transform on uint8 (3, H, W) tensors; ``strength``: standard | aggressive.

    Returns (pre, post): ``pre`` works on uint8 pixels, ``post`` (RandomErasing) on the normalised
    float image, so erased patches are mean-grey, not black.
    """
    from torchvision.transforms import v2

    if strength == "aggressive":
        pre = v2.Compose([
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.RandomRotation(15)], p=0.5),
            v2.ColorJitter(brightness=0.5, contrast=0.5, saturation=0.3, hue=0.05),
            v2.RandomPerspective(distortion_scale=0.35, p=0.6),
            v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 1.5))], p=0.4),
        ])
        post = v2.RandomErasing(p=0.5, scale=(0.02, 0.25))
    else:
        pre = v2.Compose([
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.2),
            v2.RandomPerspective(distortion_scale=0.2, p=0.3),
            v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 1.0))], p=0.2),
        ])
        post = v2.RandomErasing(p=0.25, scale=(0.02, 0.15))
    return pre, post


class FaceImageDataset(torch.utils.data.Dataset):
    """Images (N, H, W, 3) uint8 + labels -> batches ``{"image": (B, 3, S, S), "emotion": (B,)}``.

    Indices ``i + N`` (from :class:`BalancedSampler`) are repeats of image ``i``: with
    ``aggressive`` they get the stronger augmentation.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, size: int, grayscale: bool,
                 augment: bool = False, aggressive: bool = False, head: str = "emotion"):
        a = to_gray3(images) if grayscale else images
        a = resize_batch(a, size)
        self.pixels = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).contiguous()  # (N, 3, S, S)
        self.targets = np.asarray(labels, dtype=np.int64)
        self.head = head
        self.augment = augment
        self.aggressive = aggressive
        self._std = augmentation("standard") if augment else None
        self._agg = augmentation("aggressive") if augment and aggressive else None

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        b = self.__getitems__([i])
        return {k: v[0] for k, v in b.items()}

    def __getitems__(self, indices) -> dict[str, torch.Tensor]:
        n = len(self.targets)
        idx = np.asarray(indices, dtype=np.int64)
        repeat = idx >= n
        base = idx % n
        x = self.pixels[torch.from_numpy(base)]  # (B, 3, S, S) uint8
        if self.augment:
            out = torch.empty(x.shape, dtype=torch.float32)
            for k in range(len(idx)):
                pre, post = self._agg if (repeat[k] and self._agg is not None) else self._std
                out[k] = post(normalise(pre(x[k])[None])[0])
        else:
            out = normalise(x)
        return {"image": out, self.head: torch.from_numpy(self.targets[base])}


def class_targets(counts: dict[str, int], weights: dict[str, float], target: int) -> dict[str, int]:
    """Images per class in a balanced epoch: ``target`` (default: the largest class) times the
    class's sampling weight; a weight of 0 leaves the class out."""
    t = target or max(counts.values(), default=0)
    return {c: (int(round(t * weights.get(c, 1.0))) if counts.get(c, 0) else 0) for c in counts}


class BalancedSampler(torch.utils.data.Sampler):
    """Per epoch, ``per_class[c]`` draws of class ``c``: its images without replacement first,
    then repeats (yielded as ``index + N``) when it has fewer; the whole epoch shuffled."""

    def __init__(self, targets: np.ndarray, class_names: list[str], per_class: dict[str, int],
                 generator: torch.Generator):
        self.targets = np.asarray(targets)
        self.n = len(self.targets)
        self.per_class = per_class
        self.class_names = class_names
        self.gen = generator
        self.members = {c: np.flatnonzero(self.targets == k) for k, c in enumerate(class_names)}

    def __len__(self) -> int:
        return sum(self.per_class.get(c, 0) for c in self.class_names if len(self.members[c]))

    def __iter__(self) -> Iterator[int]:
        parts = []
        for c in self.class_names:
            idx, want = self.members[c], self.per_class.get(c, 0)
            if not len(idx) or want <= 0:
                continue
            perm = idx[torch.randperm(len(idx), generator=self.gen).numpy()]
            if want <= len(idx):
                parts.append(perm[:want])
            else:
                extra = idx[torch.randint(len(idx), (want - len(idx),), generator=self.gen).numpy()]
                parts += [perm, extra + self.n]  # repeats marked by the offset
        order = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        order = order[torch.randperm(len(order), generator=self.gen).numpy()]
        return iter(order.tolist())
