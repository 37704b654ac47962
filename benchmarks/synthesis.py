"""Speed of histoblur's blur synthesis against the obvious alternatives, side by side.

Run from the repository root (under a minute on 2 cores):

    .venv/bin/python benchmarks/synthesis.py
    .venv/bin/python benchmarks/synthesis.py --size 1024 --repeats 3   # quicker

Every operator gets the same 2048 x 2048 RGB uint8 image (a real H&E image from
``../shared/data/sharp/he`` mirror-tiled to size, or scikit-image's IHC image when the data folder
is absent) and returns uint8. histoblur runs through its public ``apply_blur(image, spec)``; the
alternatives are OpenCV (``GaussianBlur``, ``filter2D`` with the same kernel, a rank-k SVD
separable expansion of the disk), SciPy (``ndimage`` filters, an FFT convolution) and
albumentations' blur transforms when it is installed. Each operator is warmed up once, then
timed with ``time.perf_counter`` over up to 7 consecutive runs; the tables give the median and
best wall time, the median CPU time (all threads of the process), megapixels per second (from the
median wall time) and the speed ratio ours/theirs = their median wall time / ours (> 1: histoblur
is faster). Errors are in grey levels against the exact convolution (``cv2.filter2D`` in float32
with the flipped kernel, reflected borders).

Goals checked at the end: (a) Gaussian at least as fast as ``cv2.GaussianBlur`` with the same
sigma; (b) lens disk of radius 15 at least twice as fast as ``cv2.filter2D`` with the same disk,
error < 0.5 grey level; (c) spatially variant defocus (``variable-defocus``, max_radius 15) at
most 4 times the cost of one lens blur of radius 15.

histoblur uses every core (a thread pool), while ``cv2.filter2D`` with a large kernel runs on one.
Under each table, "other processes" is the CPU time the rest of the machine used while the table
was timed (from ``/proc/stat``, Linux only), as a share of all cores: when it is high the cores
were shared and the ratios are pessimistic for histoblur.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import scipy
import scipy.ndimage as ndi
import scipy.signal

from histoblur.kernels import disk_kernel, gaussian_kernel_1d
from histoblur.synthesis import BlurSpec, apply_blur, make_spec, plan_for
from histoblur.synthesis.execute import execute, execute_uint8
from histoblur.synthesis.plans import level_weights

try:  # optional bench dependency
    import albumentations
except ImportError:  # pragma: no cover - depends on the environment
    albumentations = None

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HE_IMAGE = DATA / "sharp" / "he" / "tiatoolbox_target_image.png"
BORDER = cv2.BORDER_REFLECT_101
TIME_BUDGET_S = 2.5  # timed seconds per operator at most (at least 3 runs)
LABEL = 60


@dataclass
class Impl:
    """One implementation of an operator, with its timings.

    ``role`` is ``ours`` (histoblur's public operator, the reference of the ratio column),
    ``info`` (another histoblur measurement, shown without a ratio) or ``theirs``.
    """

    label: str
    fn: Callable[[], object]
    role: str = "theirs"
    pixels: int | None = None  # pixels processed when not the whole image
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # process CPU time, all threads
    repeats: int = 0
    others: float | None = None  # share of the cores other processes used during its case

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    @property
    def best(self) -> float:
        return min(self.times)


def load_image(size: int, path: Path | None) -> tuple[np.ndarray, str]:
    """A size x size RGB uint8 image, mirror-tiled from a real H&E image (or skimage's IHC)."""
    source = path or HE_IMAGE
    if source.is_file():
        bgr = cv2.imread(str(source), cv2.IMREAD_COLOR)
        base, name = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), str(source)
    else:
        import skimage.data

        base, name = skimage.data.immunohistochemistry(), "skimage.data.immunohistochemistry()"
    h, w = base.shape[:2]
    tiled = np.pad(base, ((0, max(0, size - h)), (0, max(0, size - w)), (0, 0)), mode="symmetric")
    return np.ascontiguousarray(tiled[:size, :size]), f"{name} ({h}x{w}, mirror-tiled)"


def machine_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has been busy since boot (Linux), else None."""
    try:
        with open("/proc/stat") as f:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(
                int, f.readline().split()[1:9]
            )
    except (OSError, ValueError):
        return None
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """Share of all cores used by other processes between ``start()`` and ``share()``."""

    def start(self) -> None:
        self.machine, self.own, self.wall = (
            machine_cpu_seconds(),
            time.process_time(),
            time.perf_counter(),
        )

    def share(self) -> float | None:
        machine = machine_cpu_seconds()
        if machine is None or self.machine is None:
            return None
        others = (machine - self.machine) - (time.process_time() - self.own)
        capacity = (time.perf_counter() - self.wall) * (os.cpu_count() or 1)
        return max(0.0, others / capacity)


def run_case(impls: list[Impl], repeats: int) -> None:
    """Time each implementation: one warm-up call, then back-to-back runs.

    Runs of one implementation are consecutive, as in a pipeline that blurs image after image:
    interleaving them with other libraries' calls would make each start on memory the previous
    one just returned to the system.
    """
    load = OtherLoad()
    load.start()
    for impl in impls:
        start = time.perf_counter()
        impl.fn()
        first = time.perf_counter() - start
        impl.repeats = int(np.clip(TIME_BUDGET_S / max(first, 1e-4), 3, repeats))
        for _ in range(impl.repeats):
            start, cpu = time.perf_counter(), time.process_time()
            impl.fn()
            impl.times.append(time.perf_counter() - start)
            impl.cpu.append(time.process_time() - cpu)
    for impl in impls:
        impl.others = load.share()


def print_case(title: str, impls: list[Impl], megapixels: float) -> float:
    """Print one operator's table; return histoblur's median time in seconds."""
    ours = next(i for i in impls if i.role == "ours")
    print(f"\n{title}")
    head = f"{'median ms':>10} {'best ms':>9} {'CPU ms':>8} {'MP/s':>7} {'ours/theirs':>12}"
    print(f"  {'implementation':<{LABEL}} {head}")
    for impl in impls:
        rate = (impl.pixels or megapixels * 1e6) / 1e6 / impl.median
        ratio = f"{(megapixels / ours.median) / rate:.2f}x" if impl.role == "theirs" else ""
        print(
            f"  {impl.label:<{LABEL}} {impl.median * 1e3:10.1f} {impl.best * 1e3:9.1f} "
            f"{impl.cpu_median * 1e3:8.1f} {rate:7.1f} {ratio:>12}"
        )
    print(f"  other processes used {share(ours.others)} of the cores while this table was timed")
    return ours.median


def share(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def median_of(impls: list[Impl], prefix: str) -> float:
    return next(i for i in impls if i.label.startswith(prefix)).median


def exact(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Exact float32 convolution (filter2D correlates, so the kernel is flipped)."""
    flipped = np.ascontiguousarray(kernel[::-1, ::-1], dtype=np.float32)
    return cv2.filter2D(image.astype(np.float32), cv2.CV_32F, flipped, borderType=BORDER)


def max_error(label: str, out: np.ndarray, ref: np.ndarray) -> float:
    """Print and return the largest absolute difference, in grey levels."""
    err = float(np.abs(out.astype(np.float32) - ref).max())
    print(f"  max |{label} - exact| = {err:.4f} grey levels")
    return err


def ours(label: str, image: np.ndarray, spec: BlurSpec, role: str = "ours") -> Impl:
    return Impl(label, lambda: apply_blur(image, spec), role)


def executor(image: np.ndarray, spec: BlurSpec) -> Impl:
    """The executor alone on a prebuilt plan: apply_blur minus validation and plan building."""
    plan = plan_for(spec, *image.shape[:2])
    return Impl(
        "histoblur execute_uint8 (executor only, plan prebuilt)",
        lambda: execute_uint8(plan, image),
        "info",
    )


def albu(label: str, transform: object, image: np.ndarray) -> Impl:
    return Impl(label, lambda: transform(image=image)["image"])


def gaussian_cases(image: np.ndarray, mp: float, repeats: int) -> float:
    """(a): sigma 2 in full, then sigma 1 and 5 against cv2.GaussianBlur; return the ratio."""
    sigma = 2.0
    k1 = gaussian_kernel_1d(sigma)
    n = k1.size
    spec = make_spec("gaussian", sigma=sigma)
    impls = [
        ours(f"histoblur apply_blur gaussian sigma={sigma:g}", image, spec),
        executor(image, spec),
        Impl(
            "cv2.GaussianBlur ksize=(0,0) (OpenCV's 3-sigma support)",
            lambda: cv2.GaussianBlur(image, (0, 0), sigma, borderType=BORDER),
        ),
        Impl(
            f"cv2.GaussianBlur ksize={n} (histoblur's 4-sigma support)",
            lambda: cv2.GaussianBlur(image, (n, n), sigma, borderType=BORDER),
        ),
        Impl(
            "scipy.ndimage.gaussian_filter truncate=4",
            lambda: ndi.gaussian_filter(image, (sigma, sigma, 0), mode="mirror", truncate=4.0),
        ),
    ]
    if albumentations is not None:
        blur = albumentations.GaussianBlur(blur_limit=(n, n), sigma_limit=(sigma, sigma), p=1)
        impls.append(albu(f"albumentations GaussianBlur blur_limit={n}", blur, image))
    run_case(impls, repeats)
    t_ours = print_case(f"(a) Gaussian, sigma {sigma:g} ({n} taps)", impls, mp)
    ref = cv2.sepFilter2D(image.astype(np.float32), cv2.CV_32F, k1, k1, borderType=BORDER)
    max_error("histoblur uint8", apply_blur(image, spec), ref)
    cv_out = cv2.GaussianBlur(image, (0, 0), sigma, borderType=BORDER)
    max_error("cv2.GaussianBlur ksize=(0,0)", cv_out, ref)
    ratio = median_of(impls, "cv2.GaussianBlur ksize=(0,0)") / t_ours

    print("\n  other sigmas, histoblur apply_blur vs cv2.GaussianBlur ksize=(0,0):")
    print(
        f"  {'sigma':>7} {'taps':>5} {'ours ms':>9} {'cv2 ms':>9} {'ours/theirs':>12}"
        f" {'max err ours':>13} {'max err cv2':>12} {'others':>7}"
    )
    for s in (1.0, 5.0):
        spec_s = make_spec("gaussian", sigma=s)
        g1 = gaussian_kernel_1d(s)
        pair = [
            ours("ours", image, spec_s),
            Impl("cv2", lambda s=s: cv2.GaussianBlur(image, (0, 0), s, borderType=BORDER)),
        ]
        run_case(pair, repeats)
        ref = cv2.sepFilter2D(image.astype(np.float32), cv2.CV_32F, g1, g1, borderType=BORDER)
        e_ours = np.abs(apply_blur(image, spec_s) - ref).max()
        e_cv = np.abs(cv2.GaussianBlur(image, (0, 0), s, borderType=BORDER) - ref).max()
        print(
            f"  {s:7g} {g1.size:5d} {pair[0].median * 1e3:9.1f} {pair[1].median * 1e3:9.1f}"
            f" {pair[1].median / pair[0].median:11.2f}x {e_ours:13.3f} {e_cv:12.3f}"
            f" {share(pair[0].others):>7}"
        )
    return ratio


def lens_case(image: np.ndarray, mp: float, repeats: int) -> tuple[float, float]:
    """(b): return (speed ratio vs cv2.filter2D, max error of the float executor)."""
    radius = 15.0
    disk = disk_kernel(radius)
    flipped = np.ascontiguousarray(disk[::-1, ::-1], dtype=np.float32)
    spec = make_spec("lens", radius=radius)
    crop = image[:512, :512]
    r = disk.shape[0] // 2

    def scipy_fft() -> np.ndarray:
        padded = np.pad(image.astype(np.float32), ((r, r), (r, r), (0, 0)), mode="reflect")
        k = disk[..., None].astype(np.float32)
        out = scipy.signal.fftconvolve(padded, k, mode="valid", axes=(0, 1))
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    u, sv, vt = np.linalg.svd(disk)

    def svd_terms(rank: int) -> Callable[[], np.ndarray]:
        """Rank-k separable expansion (SVD), each term two 1-D passes, summed in float32."""
        terms = [
            (
                (u[::-1, i] * np.sqrt(sv[i])).astype(np.float32),
                (vt[i, ::-1] * np.sqrt(sv[i])).astype(np.float32),
            )
            for i in range(rank)
        ]

        def run() -> np.ndarray:
            acc = None
            for col, row in terms:
                part = cv2.sepFilter2D(image, cv2.CV_32F, row, col, borderType=BORDER)
                acc = part if acc is None else cv2.add(acc, part)
            return acc

        return run

    impls = [
        ours(f"histoblur apply_blur lens radius={radius:g}", image, spec),
        executor(image, spec),
        Impl(
            f"cv2.filter2D, same {disk.shape[0]}x{disk.shape[1]} disk",
            lambda: cv2.filter2D(image, -1, flipped, borderType=BORDER),
        ),
        Impl("scipy.signal.fftconvolve (float32, reflect pad)", scipy_fft),
        Impl(
            "scipy.ndimage.convolve (timed on a 512x512 crop)",
            lambda: ndi.convolve(crop, disk[..., None], mode="mirror"),
            pixels=crop.shape[0] * crop.shape[1],
        ),
    ]
    for rank in (3, 4):
        impls.append(
            Impl(f"rank-{rank} SVD separable, cv2.sepFilter2D (float32 out)", svd_terms(rank))
        )
    if albumentations is not None:
        blur = albumentations.Defocus(radius=(int(radius),) * 2, alias_blur=(0.1, 0.1), p=1)
        impls.append(albu(f"albumentations Defocus radius={radius:g} (+alias blur)", blur, image))
    run_case(impls, repeats)
    t_ours = print_case(f"(b) Lens (pillbox disk), radius {radius:g}", impls, mp)
    ref = exact(image, disk)
    plan = plan_for(spec, *image.shape[:2])
    err = max_error("histoblur float32 executor", execute(plan, image.astype(np.float32)), ref)
    ours_u8 = apply_blur(image, spec)
    max_error("histoblur uint8", ours_u8, ref)
    cv_u8 = cv2.filter2D(image, -1, flipped, borderType=BORDER)
    max_error("cv2.filter2D uint8", cv_u8, ref)
    for rank in (3, 4):
        max_error(f"rank-{rank} SVD float32", svd_terms(rank)(), ref)
    rounded = np.clip(np.rint(ref), 0, 255)
    print(
        "  fraction of values that differ from the exact result rounded: "
        f"histoblur {np.mean(ours_u8 != rounded):.1e}, cv2.filter2D {np.mean(cv_u8 != rounded):.1e}"
    )
    return median_of(impls, "cv2.filter2D") / t_ours, err


def variable_case(image: np.ndarray, mp: float, repeats: int) -> float:
    """(c): return the cost of variable-defocus in units of one lens blur."""
    radius = 15.0
    spec = make_spec("variable-defocus", max_radius=radius, seed=0)
    lens = make_spec("lens", radius=radius)
    plan = plan_for(spec, *image.shape[:2])
    impls = [
        ours(f"histoblur apply_blur variable-defocus max_radius={radius:g}", image, spec),
        executor(image, spec),
        Impl(
            "histoblur plan_for (radius map and disk stack only)",
            lambda: plan_for(spec, *image.shape[:2]),
            "info",
        ),
        ours(f"histoblur apply_blur lens radius={radius:g} (one global disk)", image, lens, "info"),
    ]
    run_case(impls, repeats)
    title = (
        f"(c) Spatially variant defocus, max_radius {radius:g} ({len(plan.kernels)} disk levels)"
    )
    t_ours = print_case(title, impls, mp)
    ref = np.zeros(image.shape, np.float32)
    for kernel, w in zip(plan.kernels, level_weights(plan.index, len(plan.kernels)), strict=True):
        ref += exact(image, kernel) * w[..., None]
    max_error("histoblur float32 executor", execute(plan, image.astype(np.float32)), ref)
    max_error("histoblur uint8", apply_blur(image, spec), ref)
    return t_ours / median_of(impls, "histoblur apply_blur lens")


def motion_zoom_cases(image: np.ndarray, mp: float, repeats: int) -> None:
    """Motion and zoom blur against their OpenCV / albumentations counterparts (no goals)."""
    length, angle = 25.0, 30.0
    spec = make_spec("motion", length=length, angle=angle)
    kernel = plan_for(spec, 8, 8).kernel
    flipped = np.ascontiguousarray(kernel[::-1, ::-1], dtype=np.float32)
    impls = [
        ours(f"histoblur apply_blur motion length={length:g} angle={angle:g}", image, spec),
        Impl(
            f"cv2.filter2D, same {kernel.shape[0]}x{kernel.shape[1]} line kernel",
            lambda: cv2.filter2D(image, -1, flipped, borderType=BORDER),
        ),
    ]
    if albumentations is not None:
        blur = albumentations.MotionBlur(
            blur_limit=(int(length),) * 2,
            angle_range=(angle, angle),
            direction_range=(0.0, 0.0),
            allow_shifted=False,
            p=1,
        )
        impls.append(albu(f"albumentations MotionBlur blur_limit={int(length)}", blur, image))
    run_case(impls, repeats)
    print_case(f"Motion blur, {length:g} px at {angle:g} degrees", impls, mp)
    max_error("histoblur uint8", apply_blur(image, spec), exact(image, kernel))

    amount = 0.05
    spec = make_spec("zoom", amount=amount)
    impls = [ours(f"histoblur apply_blur zoom amount={amount:g}", image, spec)]
    if albumentations is not None:
        factor = (1 + amount,) * 2
        blur = albumentations.ZoomBlur(max_factor=factor, step_factor=(0.01, 0.01), p=1)
        impls.append(
            albu(f"albumentations ZoomBlur max_factor={1 + amount:g} step 0.01", blur, image)
        )
    run_case(impls, min(repeats, 3))
    print_case(f"Zoom blur, amount {amount:g} (different sampling: speed only)", impls, mp)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=2048, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per operator (most)")
    parser.add_argument("--image", type=Path, default=None, help="RGB image to tile (default H&E)")
    args = parser.parse_args(argv)

    image, source = load_image(args.size, args.image)
    mp = image.shape[0] * image.shape[1] / 1e6
    started = time.perf_counter()
    print("histoblur synthesis benchmark")
    print(f"  image     {source} -> {image.shape[0]}x{image.shape[1]} RGB uint8 ({mp:.2f} MP)")
    print(
        f"  machine   {platform.machine()}, {os.cpu_count()} CPU cores, OpenCV threads "
        f"{cv2.getNumThreads()}"
    )
    print(
        f"  versions  python {platform.python_version()}, numpy {np.__version__}, opencv "
        f"{cv2.__version__}, scipy {scipy.__version__}, albumentations "
        f"{albumentations.__version__ if albumentations else 'not installed'}"
    )
    print("  ratio     ours/theirs = their time / our time (> 1: histoblur is faster)")
    print("  others    share of all cores used by other processes while a table was timed")
    total_load = OtherLoad()
    total_load.start()

    ga = gaussian_cases(image, mp, args.repeats)
    gb, err = lens_case(image, mp, args.repeats)
    gc = variable_case(image, mp, args.repeats)
    motion_zoom_cases(image, mp, args.repeats)

    print("\nGoals")
    print(f"  (a) Gaussian sigma 2 vs cv2.GaussianBlur: {ga:.2f}x -> {verdict(ga >= 1)} (>= 1x)")
    print(
        f"  (b) lens radius 15 vs cv2.filter2D: {gb:.2f}x, error {err:.1e} grey levels -> "
        f"{verdict(gb >= 2 and err < 0.5)} (>= 2x, < 0.5)"
    )
    print(f"  (c) variable-defocus vs one lens radius 15: {gc:.2f}x -> {verdict(gc <= 4)} (<= 4x)")
    print(
        f"\ntotal {time.perf_counter() - started:.0f} s; other processes used "
        f"{share(total_load.share())} of the cores meanwhile"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
