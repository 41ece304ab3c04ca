"""Exceptions with messages a person can act on."""


class MMError(Exception):
    """Base class of mm_core's own errors."""


class DecodeError(MMError, ValueError):
    """A raw item could not be decoded (corrupt, empty, unsupported, unsafe)."""


class ConfigError(MMError, ValueError):
    """A configuration value is missing or invalid."""


class WeightsError(MMError, OSError):
    """Model weights could not be found or loaded safely."""
