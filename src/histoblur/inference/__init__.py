"""Detectors and predictors that turn images into blur maps and masks."""
