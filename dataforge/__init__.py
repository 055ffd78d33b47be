"""dataforge: manufacture, curate and deliver training data for small language models."""

__version__ = "0.1.0"
