"""t2igan: text-to-image synthesis with GANs."""

__version__ = "0.1.0"


class T2IError(Exception):
    """An error caused by user input (file, config, caption): printed as one line by the CLI."""
