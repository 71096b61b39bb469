"""Exceptions that carry the place where a bad value entered (file, line, key)."""


class PPFaceDetError(Exception):
    """Base class: everything ppfacedet raises on purpose derives from this."""


class ConfigError(PPFaceDetError):
    """A config file, key, value or component name is invalid."""


class DataError(PPFaceDetError):
    """An image or annotation cannot be used; the message names the file (and line)."""
