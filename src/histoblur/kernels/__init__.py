"""Point spread functions as small normalised numpy arrays (odd size, centre at the middle).

Examples:
    >>> from histoblur.kernels import disk_kernel, gaussian_kernel, motion_kernel
    >>> [k.shape for k in (gaussian_kernel(1.0), disk_kernel(3.0), motion_kernel(9, 45))]
    [(9, 9), (7, 7), (7, 7)]
    >>> all(round(float(k.sum()), 6) == 1.0 for k in (disk_kernel(2.5), motion_kernel(12, 10)))
    True
"""

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
