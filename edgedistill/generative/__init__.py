"""Small causal language models: load a teacher, build a shallower student, distill it on the teacher's own
generations (sequence-level KD), export it with a KV cache for ONNX Runtime, and use it as the draft of
speculative decoding. Each module stands alone; nothing is downloaded."""
