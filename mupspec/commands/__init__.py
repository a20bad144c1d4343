"""One module per CLI command: `HELP`-free thin wrappers (`configure`, `run`) over the stages."""
