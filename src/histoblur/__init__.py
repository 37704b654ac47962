"""histoblur: out-of-focus blur for digital pathology.

Synthesize realistic blur, build pixel-labelled training sets, detect, remove and measure it.
The most used entry points are re-exported here.
"""

from histoblur.errors import HistoblurError, InputError, OutputError, ParameterError

__version__ = "0.1.0"

__all__ = ["HistoblurError", "InputError", "OutputError", "ParameterError", "__version__"]
