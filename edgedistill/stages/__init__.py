"""One module per pass, each a registered `Stage` (edgedistill.stages.base)."""
