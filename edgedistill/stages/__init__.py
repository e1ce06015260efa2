"""One module per pass. Each has `run(ctx, state, stage_dir) -> state`, which does the work and puts its
record in state.records[name], and `restore(ctx, state, stage_dir) -> state`, which rebuilds its output
from the files of a finished run. `USES_TARGET = True` marks the stages whose result depends on the target."""
