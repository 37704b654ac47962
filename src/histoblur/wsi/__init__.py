"""Whole-slide and tile-level helpers: tissue detection (slide readers come with the QC issue)."""
