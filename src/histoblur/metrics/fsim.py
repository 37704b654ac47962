"""FSIM and FSIMc: feature similarity from phase congruency and gradient magnitude.

Zhang, Zhang, Mou and Zhang (IEEE TIP 2011), with the authors' constants: images on a 0-255
scale, area down-sampled by ``round(min(H, W) / 256)``, the luma Y of YIQ, phase congruency
from log-Gabor filters (4 scales from wavelength 6, ratio 2, bandwidth 0.55; 4 orientations,
angular spread ratio 1.2; noise threshold k = 2), Scharr gradient magnitude,
``T1 = 0.85, T2 = 160`` and, for FSIMc, the I and Q chroma with ``T3 = T4 = 200,
lambda = 0.03``. The score pools ``S_PC * S_G`` weighted by the larger phase congruency of
the two images. 1 for identical images; higher is better.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812

from histoblur.metrics.full_reference import ImageLike, Score, _finish, _pair_batches

SCALES, ORIENTATIONS, MIN_WAVELENGTH, MULT = 4, 4, 6, 2
SIGMA_ON_F, D_THETA_ON_SIGMA, K = 0.55, 1.2, 2.0
T1, T2, T3, T4, LAMBDA = 0.85, 160.0, 200.0, 200.0, 0.03
YIQ = ((0.299, 0.587, 0.114), (0.5959, -0.2746, -0.3213), (0.2115, -0.5227, 0.3112))


def _frequency_grid(h: int, w: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised frequency radius and angle, zero frequency at [0, 0] (FFT layout)."""

    def axis(n: int) -> torch.Tensor:
        if n % 2:
            return torch.arange(-(n - 1) / 2, n / 2, dtype=dtype) / (n - 1)
        return torch.arange(-n / 2, n / 2, dtype=dtype) / n

    u, v = torch.meshgrid(axis(h), axis(w), indexing="ij")
    radius = torch.fft.ifftshift(torch.sqrt(u**2 + v**2))
    angle = torch.fft.ifftshift(torch.atan2(-v, u))
    return radius, angle


def log_gabor_bank(h: int, w: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(orientations, scales, H, W) frequency responses of the log-Gabor filters."""
    radius, angle = _frequency_grid(h, w, dtype)
    lowpass = 1.0 / (1.0 + (radius / 0.45) ** 30)
    radius = radius.clone()
    radius[0, 0] = 1.0
    radial = []
    for s in range(SCALES):
        centre = 1.0 / (MIN_WAVELENGTH * MULT**s)
        band = torch.exp(-(torch.log(radius / centre) ** 2) / (2 * math.log(SIGMA_ON_F) ** 2))
        band = band * lowpass
        band[0, 0] = 0.0
        radial.append(band)
    theta_sigma = math.pi / (ORIENTATIONS * D_THETA_ON_SIGMA)
    bank = []
    for o in range(ORIENTATIONS):
        a = o * math.pi / ORIENTATIONS
        d_sin = torch.sin(angle) * math.cos(a) - torch.cos(angle) * math.sin(a)
        d_cos = torch.cos(angle) * math.cos(a) + torch.sin(angle) * math.sin(a)
        spread = torch.exp(-(torch.atan2(d_sin, d_cos) ** 2) / (2 * theta_sigma**2))
        bank.append(torch.stack([spread * r for r in radial]))
    return torch.stack(bank)


def phase_congruency(luma: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """Kovesi's phase congruency (N, H, W) of lumas (N, H, W) on a 0-255 scale."""
    eps = torch.finfo(luma.dtype).eps
    n, h, w = luma.shape
    responses = torch.fft.ifft2(torch.fft.fft2(luma)[:, None, None] * bank[None])  # N, O, S, H, W
    even, odd = responses.real, responses.imag
    amplitude = responses.abs()
    sum_even, sum_odd = even.sum(2, keepdim=True), odd.sum(2, keepdim=True)
    norm = torch.sqrt(sum_even**2 + sum_odd**2) + eps
    mean_even, mean_odd = sum_even / norm, sum_odd / norm
    energy = (even * mean_even + odd * mean_odd - (even * mean_odd - odd * mean_even).abs()).sum(2)
    # noise: the smallest scale's squared amplitude is Rayleigh-distributed under Gaussian noise
    smallest = amplitude[:, :, 0].reshape(n, ORIENTATIONS, -1) ** 2
    mean_e2n = -torch.median(smallest, dim=-1).values / math.log(0.5)
    noise_power = mean_e2n / (bank[:, 0] ** 2).sum(dim=(-2, -1))  # N, O
    spatial = torch.fft.ifft2(bank).real * math.sqrt(h * w)  # O, S, H, W
    sum_an2 = (spatial**2).sum(dim=(1, 2, 3))
    cross = sum((spatial[:, s] * spatial[:, t]).sum(dim=(-2, -1))
                for s in range(SCALES) for t in range(s + 1, SCALES))  # fmt: skip
    noise_energy2 = 2 * noise_power * sum_an2 + 4 * noise_power * cross
    tau = torch.sqrt(noise_energy2 / 2)
    threshold = (tau * math.sqrt(math.pi / 2) + K * torch.sqrt((2 - math.pi / 2) * tau**2)) / 1.7
    energy = torch.clamp(energy - threshold[..., None, None], min=0)
    return (energy.sum(1) + eps) / (amplitude.sum(dim=(1, 2)) + eps)


def _similarity(a: torch.Tensor, b: torch.Tensor, constant: float) -> torch.Tensor:
    return (2 * a * b + constant) / (a**2 + b**2 + constant)


def _gradient(luma: torch.Tensor) -> torch.Tensor:
    scharr = torch.tensor(
        [[-3.0, 0.0, 3.0], [-10.0, 0.0, 10.0], [-3.0, 0.0, 3.0]], dtype=luma.dtype
    )
    kernels = torch.stack([scharr, scharr.T])[:, None] / 16
    g = F.conv2d(luma[:, None], kernels, padding=1)
    return torch.sqrt((g**2).sum(1))


def fsim(a: ImageLike, b: ImageLike, chromatic: bool = True) -> Score:
    """FSIM (grey, or ``chromatic=False``) or FSIMc (RGB) of ``b`` against ``a``.

    Args:
        a: reference image(s); grey or RGB (alpha ignored).
        b: test image(s), same shape and dtype.
        chromatic: FSIMc on RGB images (the I and Q chroma also compared).

    Returns:
        A float for one numpy image, a tensor ``(N,)`` for a torch batch; 1 for identical images.

    Raises:
        InputError: if the inputs cannot be compared.

    Examples:
        >>> import numpy as np
        >>> from histoblur.synthesis import apply_blur, make_spec
        >>> sharp = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        >>> blurred = apply_blur(sharp, make_spec("gaussian", sigma=2.0))
        >>> fsim(sharp, sharp), bool(fsim(sharp, blurred) < fsim(sharp, sharp))
        (1.0, True)
        >>> x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
        >>> fsim(x, x, chromatic=False).shape  # grey batch: FSIM
        torch.Size([2])
    """
    x, y, _, single = _pair_batches(a, b, None)
    x, y = x.double() * 255, y.double() * 255
    factor = max(1, round(min(x.shape[-2:]) / 256))
    if factor > 1:
        x, y = F.avg_pool2d(x, factor), F.avg_pool2d(y, factor)
    colour = x.shape[1] >= 3
    yiq = torch.tensor(YIQ, dtype=x.dtype)
    if colour:
        x, y = (torch.einsum("kc,nchw->nkhw", yiq, t[:, :3]) for t in (x, y))
    bank = log_gabor_bank(*x.shape[-2:], dtype=x.dtype)
    pc_x, pc_y = phase_congruency(x[:, 0], bank), phase_congruency(y[:, 0], bank)
    score = _similarity(pc_x, pc_y, T1) * _similarity(_gradient(x[:, 0]), _gradient(y[:, 0]), T2)
    if chromatic and colour:
        chroma = _similarity(x[:, 1], y[:, 1], T3) * _similarity(x[:, 2], y[:, 2], T4)
        score = score * chroma.abs() ** LAMBDA
    weight = torch.maximum(pc_x, pc_y)
    values = (score * weight).sum(dim=(1, 2)) / weight.sum(dim=(1, 2))
    return _finish(values, single)
