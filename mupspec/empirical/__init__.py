"""Stage 4: real networks. Build models from a spec, measure per-layer scales
across widths and depths, fit exponents, and run the bundled experiments.
torch is imported only below this package (and in generated code)."""
