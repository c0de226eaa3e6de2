"""masklab: switch neurons off on purpose and measure what happens."""

__version__ = "0.1.0"
