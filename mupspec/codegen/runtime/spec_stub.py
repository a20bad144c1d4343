"""What the generated module's header defines above the runtime, with
neutral defaults so that the runtime parts can be read, linted and
imported on their own. Never copied: the header (emit) writes the real
values from the spec.
"""

RULES: dict = {}  # (block or sub-role, field) -> rule function (fan_in, fan_out, dims, hypers) -> float
SUBROLES: dict = {}  # sub-role -> its class (e.g. "query" -> "hidden"); empty for a spec without sub-roles
BLOCKS: tuple = ()
FAMILIES: tuple = ()
MUON_BLOCKS: tuple = ()  # blocks / sub-roles Muon steps (emitted only for specs with `lr.muon` rules)
WIDTH_SYMBOLS: tuple = ()  # every width symbol, free and derived, in declaration order
DERIVED_WIDTHS: dict = {}  # derived width symbol -> function(dims) -> its size (None while an input is missing)
SUBROLE_CLASSES: dict = {}  # every sub-role of the language -> its class (those without a block follow it)
SUBROLE_OWN_FIELDS: dict = {}  # sub-role -> the fields where its rule is not its class's
TIES: tuple = ()  # (embedding role, readout role) pairs sharing one tensor (MuSharedReadout)
SHAREABLE_TIES: tuple = ()  # (embedding, readout) blocks whose rules can share one tensor as written
DEPTH_SYMBOL = None
HYPER_DEFAULTS: dict = {}
SPEC_NAME = ""
