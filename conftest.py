"""Collection rules for the whole repository (tests and the package's doctests)."""

from importlib.util import find_spec

# the albumentations integration is an optional extra: its doctests need the package
collect_ignore = (
    [] if find_spec("albumentations") else ["src/histoblur/synthesis/albumentations.py"]
)
