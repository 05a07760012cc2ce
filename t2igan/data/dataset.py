"""Training batches: decoded-once uint8 images, caption tokens, wrong captions.

The order of images, the caption drawn for each image and the mismatched ("wrong")
caption are all fixed by (seed, epoch), so a run resumed at step k sees exactly the batches
an uninterrupted run would. Augmentation (random crop, flip) runs on tensors, on the
training device, with randomness derived from (seed, step).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from t2igan.data.folder import CaptionedImages
from t2igan.data.text import Vocabulary


def load_size(image_size: int, crop: bool) -> int:
    """Side at which images are cached: StackGAN/AttnGAN crop a 76/64 larger image."""
    return image_size * 76 // 64 if crop else image_size


class TextImageDataset(Dataset):
    """Item = (image index, caption index, wrong image index, wrong caption index) -> tensors."""

    def __init__(self, data: CaptionedImages, vocab: Vocabulary, image_size: int, max_words: int,
                 crop: bool = True, progress: bool = False):
        self.data, self.vocab, self.max_words = data, vocab, max_words
        self.images = data.images_uint8(load_size(image_size, crop), progress=progress)  # (N, L, L, 3) uint8
        # token ids of every caption, padded to max_words (unknown words dropped)
        self.tokens: list[torch.Tensor] = []
        self.lengths: list[torch.Tensor] = []
        for caps in data.captions:
            t, n, _ = vocab.batch(caps, max_words)
            self.tokens.append(t)
            self.lengths.append(n)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, item):
        i, j, wi, wj = item
        return {
            "image": torch.from_numpy(np.array(self.images[i])).permute(2, 0, 1),  # (3, L, L) uint8
            "tokens": self.tokens[i][j], "length": self.lengths[i][j],
            "wrong_tokens": self.tokens[wi][wj], "wrong_length": self.lengths[wi][wj],
            "index": torch.tensor(i), "caption_index": torch.tensor(j),
            "wrong_index": torch.tensor(wi), "wrong_caption_index": torch.tensor(wj),
        }


class EpochBatchSampler:
    """Yields batches of item tuples for an endless sequence of epochs, from step ``start``.

    With ``num_replicas > 1`` each rank takes a strided share of every global batch
    (``batch_size`` is the global batch).
    """

    def __init__(self, num_captions: list[int], batch_size: int, seed: int, start_step: int = 0,
                 rank: int = 0, num_replicas: int = 1):
        self.ncap = np.asarray(num_captions)
        self.n = len(num_captions)
        if self.n < batch_size:
            raise ValueError(f"dataset has {self.n} images, fewer than the batch size {batch_size}")
        if batch_size % num_replicas:
            raise ValueError(f"batch size {batch_size} is not divisible by {num_replicas} processes")
        self.batch_size, self.seed, self.start = batch_size, seed, start_step
        self.rank, self.world = rank, num_replicas
        self.steps_per_epoch = self.n // batch_size

    def _epoch(self, epoch: int):
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.n)
        cap = (rng.random(self.n) * self.ncap[order]).astype(np.int64)
        shift = rng.integers(1, self.n, self.n)  # wrong image = another image
        wrong = (order + shift) % self.n
        wcap = (rng.random(self.n) * self.ncap[wrong]).astype(np.int64)
        return order, cap, wrong, wcap

    def __iter__(self):
        step = self.start
        while True:
            epoch, k = divmod(step, self.steps_per_epoch)
            order, cap, wrong, wcap = self._epoch(epoch)
            for b in range(k, self.steps_per_epoch):
                sl = slice(b * self.batch_size + self.rank, (b + 1) * self.batch_size, self.world)
                yield list(zip(order[sl].tolist(), cap[sl].tolist(), wrong[sl].tolist(), wcap[sl].tolist()))
            step = (epoch + 1) * self.steps_per_epoch


def augment(images: torch.Tensor, size: int, crop: bool, flip: bool, generator: torch.Generator | None,
            shard: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """uint8 ``[B, 3, L, L]`` -> float ``[B, 3, size, size]`` in [-1, 1] with random crop and flip.

    ``shard=(rank, world)``: ``images`` are rows rank, rank + world, ... of a global batch of
    ``B * world``; the crops and flips drawn are those of the global batch, so they do not
    depend on the number of processes."""
    B, _, L, _ = images.shape
    rank, world = shard
    x = images.float().div_(127.5).sub_(1.0)
    if crop and L > size:
        off = torch.randint(0, L - size + 1, (B * world, 2), generator=generator)[rank::world].tolist()
        x = torch.stack([x[b, :, oy:oy + size, ox:ox + size] for b, (oy, ox) in enumerate(off)])
    elif L != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    if flip:
        m = torch.rand(B * world, generator=generator)[rank::world] < 0.5
        x = torch.where(m.to(x.device)[:, None, None, None], x.flip(3), x)
    return x


def multiscale(x: torch.Tensor, num_scales: int) -> list[torch.Tensor]:
    """Targets at size/2**(num_scales-1), ..., size (smallest first, as StackGAN++/AttnGAN)."""
    out = [x]
    for _ in range(num_scales - 1):
        out.insert(0, F.avg_pool2d(out[0], 2))
    return out


@dataclass
class Batch:
    images: list[torch.Tensor]  # per scale, smallest first, float [-1, 1]
    tokens: torch.Tensor  # (B, T) long
    lengths: torch.Tensor  # (B,)
    wrong_tokens: torch.Tensor
    wrong_lengths: torch.Tensor
    index: torch.Tensor  # image index in the split
    caption_index: torch.Tensor | None = None  # which caption of that image (keys precomputed embeddings)
    wrong_index: torch.Tensor | None = None  # the mismatched caption's image and caption index
    wrong_caption_index: torch.Tensor | None = None
