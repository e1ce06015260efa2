def run(ctx, state, stage_dir):
    state.records["prune"] = {"name": "prune"}
    return state


def restore(ctx, state, stage_dir):
    return state
