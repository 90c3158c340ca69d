class ConversionError(Exception):
    """A checkpoint that cannot be converted; the message names the file and says why."""
