def run(ctx, state, stage_dir):
    state.records["export"] = {"name": "export"}
    return state


def restore(ctx, state, stage_dir):
    return state
