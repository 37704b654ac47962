import cv2
import numpy as np
import pytest

from histoblur.errors import InputError, ParameterError
from histoblur.io.images import to_gray_float
from histoblur.synthesis import BLUR_KINDS, DegradeSpec, apply_blur, get_kind, make_spec
from histoblur.synthesis.execute import UINT8_TAIL_TOL

ALL = list(BLUR_KINDS.values())
STRONG = {
    "sigma": 3.0,
    "radius": 5.0,
    "max_radius": 6.0,
    "length": 15.0,
    "size": 3.0,
    "amount": 0.1,
    "angle": 20.0,
}
LADDERS = {
    "sigma": [0.8, 1.6, 3.2],
    "radius": [1.5, 3.0, 6.0],
    "max_radius": [2.0, 4.0, 8.0],
    "length": [4.0, 10.0, 25.0],
    "size": [1.0, 2.5, 5.0],
    "amount": [0.03, 0.08, 0.2],
}
SPIN_LADDER = [2.0, 6.0, 15.0]


def _spec(kind, value=None):
    field = kind.strength
    value = STRONG[field] if value is None else value
    params = {field: value}
    if kind.spec.model_fields["kind"].default == "spin":
        params = {"angle": value}
    if "min_radius" in kind.spec.model_fields:
        params["min_radius"] = 0.0
    return make_spec(kind.name, **params)


def _lapvar(image):
    return float(cv2.Laplacian(to_gray_float(image), cv2.CV_32F).var())


def _shift(a, b, band=0.04):
    """Sub-pixel translation of ``b`` relative to ``a`` by phase correlation.

    The shift is the least-squares slope of the cross-power spectrum's phase over low frequencies
    (below ``band`` cycles/px, inside the first lobe of every PSF tested here): a disk or box PSF
    flips the sign of some higher frequencies, which would bias a plain correlation peak.
    """
    a, b = to_gray_float(a).astype(np.float64), to_gray_float(b).astype(np.float64)
    win = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    cross = np.fft.fft2((b - b.mean()) * win) * np.conj(np.fft.fft2((a - a.mean()) * win))
    fy = np.fft.fftfreq(a.shape[0])[:, None] + 0 * np.fft.fftfreq(a.shape[1])[None, :]
    fx = np.fft.fftfreq(a.shape[1])[None, :] + 0 * fy
    keep = (np.hypot(fx, fy) < band) & (np.hypot(fx, fy) > 0)
    w = np.sqrt(np.abs(cross[keep]))
    design = -2 * np.pi * np.stack([fx[keep], fy[keep]], axis=1) * w[:, None]
    (dx, dy), *_ = np.linalg.lstsq(design, np.angle(cross[keep]) * w, rcond=None)
    return dx, dy


def test_shift_estimator_sees_a_real_shift(ihc):
    image = ihc[64:320, 64:320]
    moved = ihc[63:319, 66:322]  # content moves down 1 px and left 2 px
    dx, dy = _shift(image, moved)
    assert abs(dx + 2) < 0.2 and abs(dy - 1) < 0.2


@pytest.mark.parametrize("kind", ALL, ids=lambda k: k.name)
def test_blur_never_shifts_the_image(kind, ihc):
    image = ihc[64:320, 64:320]
    out = apply_blur(image, _spec(kind))
    dx, dy = _shift(image, out)
    assert abs(dx) < 0.25 and abs(dy) < 0.25


@pytest.mark.parametrize("kind", ALL, ids=lambda k: k.name)
def test_sharpness_falls_monotonically_with_strength(kind, tile):
    ladder = SPIN_LADDER if kind.name == "spin" else LADDERS[kind.strength]
    values = [_lapvar(tile)] + [_lapvar(apply_blur(tile, _spec(kind, v))) for v in ladder]
    assert all(a > b for a, b in zip(values, values[1:], strict=False)), values


@pytest.mark.parametrize("kind", ALL, ids=lambda k: k.name)
def test_no_colour_shift_and_dtype_kept(kind, tile):
    out = apply_blur(tile, _spec(kind))
    assert out.dtype == tile.dtype and out.shape == tile.shape
    diff = np.abs(out.reshape(-1, 3).mean(0) - tile.reshape(-1, 3).mean(0))
    assert diff.max() < 0.02 * 255


@pytest.mark.parametrize("kind", ALL, ids=lambda k: k.name)
def test_formats_grey_rgba_uint16(kind, tile):
    spec = _spec(kind)
    grey = cv2.cvtColor(tile, cv2.COLOR_RGB2GRAY)
    assert apply_blur(grey, spec).shape == grey.shape
    rgba = np.dstack([tile, np.arange(tile.size // 3, dtype=np.uint8).reshape(tile.shape[:2])])
    out = apply_blur(rgba, spec)
    assert out.shape == rgba.shape and np.array_equal(out[..., 3], rgba[..., 3])
    wide = tile.astype(np.uint16) * 257
    out16 = apply_blur(wide, spec)
    assert out16.dtype == np.uint16
    ref8 = apply_blur(tile, spec).astype(np.float64)
    assert np.abs(out16 / 257.0 - ref8).max() <= 1.0


def test_gaussian_matches_opencv(tile):
    sigma = 2.3
    ksize = 2 * int(np.ceil(4 * sigma)) + 1
    ref = cv2.GaussianBlur(
        tile.astype(np.float32), (ksize, ksize), sigma, borderType=cv2.BORDER_REFLECT_101
    )
    out = apply_blur(tile, make_spec("gaussian", sigma=sigma))
    # uint8 drops Gaussian tails worth at most UINT8_TAIL_TOL grey level before rounding
    assert np.abs(out.astype(np.float32) - ref).max() <= 0.51 + UINT8_TAIL_TOL


def test_lens_matches_direct_convolution(tile):
    from histoblur.kernels import disk_kernel

    k = disk_kernel(4.0).astype(np.float32)
    ref = cv2.filter2D(
        tile.astype(np.float32), -1, k[::-1, ::-1].copy(), borderType=cv2.BORDER_REFLECT_101
    )
    out = apply_blur(tile, make_spec("lens", radius=4.0))
    assert np.abs(out.astype(np.float32) - ref).max() <= 0.51


def test_sampling_is_deterministic():
    for kind in ALL:
        a = kind.sampler().sample(np.random.default_rng(7))
        b = kind.sampler().sample(np.random.default_rng(7))
        assert a == b


def test_sampler_overrides_and_validation():
    sampler = get_kind("gaussian").sampler.build(sigma=(2.0, 2.5))
    rng = np.random.default_rng(0)
    assert all(2.0 <= sampler.sample(rng).sigma <= 2.5 for _ in range(20))
    with pytest.raises(ParameterError):
        get_kind("gaussian").sampler.build(sigma=(3.0, 1.0))
    with pytest.raises(ParameterError):
        get_kind("gaussian").sampler.build(nope=1)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("gaussian", {"sigma": -1}),
        ("motion", {"length": 0}),
        ("lens", {"radius": 1000}),
        ("aperture", {"blades": 2}),
    ],
)
def test_out_of_range_parameters_are_refused(name, params):
    with pytest.raises(ParameterError, match=next(iter(params))):
        make_spec(name, **params)


def test_unknown_kind_lists_the_known_ones():
    with pytest.raises(ParameterError, match="gaussian"):
        get_kind("nope")


def test_bad_arrays_are_refused():
    spec = make_spec("gaussian")
    with pytest.raises(InputError):
        apply_blur(np.zeros((0, 5, 3), np.uint8), spec)
    with pytest.raises(InputError):
        apply_blur(np.zeros((8, 8, 3), np.float64), spec)
    with pytest.raises(InputError):
        apply_blur(np.zeros((8, 8, 2), np.uint8), spec)


def test_degradation_is_seeded_and_changes_pixels(tile):
    spec = make_spec("gaussian", sigma=1.0)
    post = DegradeSpec(photons=200.0, read_noise=0.01, jpeg_quality=70, seed=5)
    a, b = apply_blur(tile, spec, post), apply_blur(tile, spec, post)
    assert np.array_equal(a, b)
    clean = apply_blur(tile, spec)
    assert 0.5 < np.abs(a.astype(float) - clean).mean() < 10
    assert abs(a.mean() - clean.mean()) < 2  # noise is zero-mean


def test_real_tiles_blur(data_dir):
    from histoblur.io.images import read_image

    for path in sorted((data_dir / "sharp" / "he").glob("*.png"))[:3]:
        image = read_image(path)
        out = apply_blur(image, make_spec("variable-defocus", max_radius=6.0, seed=1))
        assert out.shape == image.shape
        assert _lapvar(out) < _lapvar(image)
