"""Whole-slide and tile-level helpers: slide readers, a pyramidal TIFF writer, tissue detection.

:func:`histoblur.wsi.readers.open_slide` opens OpenSlide formats, tiled TIFF, plain images
and DICOM whole-slide images (a ``.dcm`` file or a folder of one slide's instances, through
wsidicom), all behind one :class:`~histoblur.wsi.readers.SlideReader` protocol.

Examples:
    Write a tiny pyramidal slide, open it, and find its tissue on a thumbnail:

    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from histoblur.wsi.pyramid import write_pyramidal_tiff
    >>> from histoblur.wsi.readers import open_slide, thumbnail
    >>> from histoblur.wsi.tissue import detect_tissue
    >>> slide = np.full((600, 800, 3), 240, np.uint8)  # glass
    >>> slide[100:500, 100:700] = (180, 90, 160)  # stained tissue
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     reader = open_slide(write_pyramidal_tiff(Path(tmp) / "slide.tif", slide, mpp=0.5))
    ...     thumb = thumbnail(reader, 8)
    ...     reader.close()
    >>> thumb.shape
    (75, 100, 3)
    >>> tissue = detect_tissue(thumb, um_per_px=0.5 * 8)
    >>> bool(tissue[37, 50]), bool(tissue[2, 2])  # centre is tissue, corner is glass
    (True, False)
"""
