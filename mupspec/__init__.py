"""mupspec: declare, check, convert and compile neural-network parametrizations (μP and friends)."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """mupspec.coord_check and mupspec.audit, imported on first use (they
    import torch; `import mupspec` alone does not)."""
    if name == "coord_check":
        from mupspec.empirical.coord import coord_check
        return coord_check
    if name == "audit":
        from mupspec.auditing import audit
        return audit
    raise AttributeError(f"module 'mupspec' has no attribute {name!r}")
