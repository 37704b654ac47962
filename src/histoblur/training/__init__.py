"""Training: one trainer per task on shared data streams, augmentations and losses."""
