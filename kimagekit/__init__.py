"""kimagekit: build, inspect, verify and patch Linux kexec images offline, byte for byte."""

from kimagekit.errors import KimageError, ParseError, RuleError, UnrecognisedFormat, UsageError

__version__ = "0.1.0"
__all__ = [
    "KimageError", "ParseError", "RuleError", "UnrecognisedFormat", "UsageError", "__version__",
]
