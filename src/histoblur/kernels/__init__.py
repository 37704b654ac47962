"""Point spread functions as small normalised numpy arrays (odd size, centre at the middle)."""

from histoblur.kernels.aperture import disk_kernel, polygon_kernel
from histoblur.kernels.core import centroid_offset, combine, normalize
from histoblur.kernels.gaussian import gaussian_kernel, gaussian_kernel_1d
from histoblur.kernels.motion import motion_kernel

__all__ = [
    "centroid_offset",
    "combine",
    "disk_kernel",
    "gaussian_kernel",
    "gaussian_kernel_1d",
    "motion_kernel",
    "normalize",
    "polygon_kernel",
]
