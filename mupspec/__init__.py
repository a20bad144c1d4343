"""mupspec: declare, check, convert and compile neural-network parametrizations (μP and friends)."""

__version__ = "0.1.0"
