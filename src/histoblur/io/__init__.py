"""Reading and writing images, masks, manifests and reports."""
