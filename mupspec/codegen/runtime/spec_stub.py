"""What the generated module's header defines above the runtime, with
neutral defaults so that the runtime parts can be read, linted and
imported on their own. Never copied: the header (emit) writes the real
values from the spec.
"""

RULES: dict = {}  # (block or sub-role, field) -> rule function (fan_in, fan_out, dims, hypers) -> float
SUBROLES: dict = {}  # sub-role -> its class (e.g. "query" -> "hidden"); empty for a spec without sub-roles
BLOCKS: tuple = ()
FAMILIES: tuple = ()
WIDTH_SYMBOLS: tuple = ()
DEPTH_SYMBOL = None
HYPER_DEFAULTS: dict = {}
SPEC_NAME = ""
