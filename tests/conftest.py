import os

# Quiet, offline, deterministic: set before torch/torchao/coremltools are imported by any test.
os.environ.setdefault("TORCHAO_FORCE_SKIP_LOADING_SO_FILES", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "300")

import logging  # noqa: E402

for name in ("coremltools", "torchao", "torch.onnx", "onnxscript"):
    logging.getLogger(name).setLevel(logging.ERROR)
