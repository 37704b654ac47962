"""Segmentation losses: binary cross-entropy plus soft Dice."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice over the whole batch (pooled pixels, so all-sharp tiles are well defined)."""
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum()
    return 1 - (2 * inter + smooth) / (prob.sum() + target.sum() + smooth)


def bce_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, bce_weight: float = 1.0, dice_weight: float = 1.0
) -> torch.Tensor:
    """``bce_weight * BCE + dice_weight * (1 - soft Dice)`` of logits against a {0, 1} mask."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    return bce_weight * bce + dice_weight * soft_dice_loss(logits, target)
