"""Stage 6b: the spec-independent half of every generated module, in parts.

`mupspec.codegen.generate` emits the spec's rules as Python functions (a
`RULES` table and a few constants) and then copies each part below,
in PARTS order, from its RUNTIME marker on. So these files are never
imported by mupspec itself to run: their code runs only inside a generated
module, where the constants of `spec_stub.py` are defined above it. They
may use only `math` and `torch` (the generated module's only imports); the
imports above each marker only name what a part uses from the others. The
API is documented in docs/codegen.md.
"""

PARTS = ("plan", "roles", "rules", "records", "init", "multipliers", "parametrize", "optimizer", "attention", "report", "audit")
MARKER = "# ---- RUNTIME (everything below is copied into each generated module) ----\n"
