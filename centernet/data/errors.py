"""Errors raised for bad input data: each message names the file and the problem."""


class DataError(ValueError):
    """A data file (annotations, image, data set layout) is missing or malformed."""


class ImageLoadError(DataError):
    """An image file is missing, unreadable, truncated or of an unsupported kind."""


class ImageTooLargeError(ImageLoadError):
    """An image has more pixels than the caller accepts (checked from its header, before decoding)."""
