def run(ctx, state, stage_dir):
    state.records["qat"] = {"name": "qat"}
    return state


def restore(ctx, state, stage_dir):
    return state
