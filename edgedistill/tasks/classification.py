"""Classification, of images and of text: held-out accuracy and agreement with the teacher, cross-entropy
for a teacher, logit KD (plus feature and attention terms) for a student, born-again generations."""

from __future__ import annotations

import torch

from edgedistill.data.split import split_of
from edgedistill.tasks import TASKS, Task
from edgedistill.tasks.fitting import stage_augment, train, training_data
from edgedistill.training import accuracy, predict


class Classification(Task):
    def load(self, cfg, seed: int, teacher_path, preprocess=None):
        from edgedistill.data import load_data

        return load_data(cfg, seed, tokenizer_dir=teacher_path, preprocess=preprocess)

    def evaluate(self, handle, ctx, state=None) -> dict:
        """Held-out accuracy, parameters and MACs: the columns of the report's stage table; with the pipeline
        state, also its top-1 agreement with the teacher, from the same forward pass."""
        from edgedistill.families import size

        logits = predict(handle.module, ctx.data.x_test)
        record = {"accuracy": accuracy(logits, ctx.data.y_test), **size(handle)}
        if state is not None:
            record["agreement_with_teacher"] = self.agreement_with_teacher(ctx, state, logits)
        return record

    def agreement_with_teacher(self, ctx, state, logits) -> float:
        """Share of held-out examples where `logits` pick the teacher's class (the teacher's predictions are
        computed once per run)."""
        key = ("teacher_test_predictions", id(state.teacher.module))
        if key not in ctx.cache:
            ctx.cache[key] = predict(state.teacher.module, ctx.data.x_test).argmax(-1)
        return float((logits.argmax(-1) == ctx.cache[key]).float().mean())

    def supervised(self):
        from edgedistill.distill import SupervisedTask

        return SupervisedTask()

    def kd(self, ctx, state, stage: str, cfg, student_module, teacher=None):
        """The stage's DistillationTask: the teacher (re-normalizing its inputs when it expects other
        statistics), feature terms hooked on `student_module`, and teacher logits computed once per run and
        reused by every stage when the data has no random augmentation."""
        from edgedistill.distill import DistillationTask
        from edgedistill.distill.task import renormalizer

        spec, own = ctx.data.spec, ctx.recipe.teacher.normalization
        data = training_data(ctx, state)
        teacher = teacher if teacher is not None else state.teacher.module
        if ctx.device.type == "cuda" and len(spec.input_shape) == 3:
            teacher.to(memory_format=torch.channels_last)  # as the student's batches arrive
        teacher_input = renormalizer(spec.mean, spec.std, own.mean, own.std) if own is not None else None
        field = f"stages.{stage}"
        features = list(cfg.features)
        if getattr(cfg, "layer_match", None) is not None:
            from edgedistill.distill.features import transformer_layer_terms

            features += transformer_layer_terms(cfg.layer_match, student_module, teacher, field)
        task = DistillationTask.from_stage(teacher, cfg, student=student_module, features=features,
                                           example_input=split_of(data.x_train).head(2), teacher_input=teacher_input,
                                           field=f"{field}.features")
        task.cache_info = {}
        cache = cfg.cache_teacher if cfg.cache_teacher is not None else not stage_augment(ctx, cfg).active
        if cache and not task.features:
            key = ("teacher_logits", id(teacher), cfg.cache_topk, cfg.temperature)
            if key not in ctx.cache:
                info = task.cache_teacher_logits(data.x_train, topk=cfg.cache_topk)
                ctx.cache[key] = (task.cached_logits, info)
            task.cached_logits, task.cache_info = ctx.cache[key]
        return task

    def _generation(self, ctx, state, cfg, stage_dir, g: int, student, teacher_module):
        """Train one generation (resumable on its own checkpoint) and return its history."""
        from edgedistill import io
        from edgedistill.families import load_state_dict

        weights = stage_dir / f"generation{g}.pt"
        if weights.exists():  # finished before an interruption
            load_state_dict(student, weights, "distill")
            return None, {}
        task = self.kd(ctx, state, "distill", cfg, student.module, teacher=teacher_module)
        history = train(ctx, state, "distill", student.module, task, stage_dir,
                        checkpoint_name=f"checkpoint{g}.pt" if cfg.generations > 1 else "checkpoint.pt")
        task.close()
        if cfg.generations > 1:
            io.save_torch(weights, student.module.state_dict())
        return history, {"teacher_logits_cached": task.cached_logits is not None, **task.cache_info}

    def distill(self, ctx, state, stage_dir) -> dict:
        """Logit KD (and feature terms); with `generations` > 1, born-again distillation: each new generation
        is a freshly initialised student taught by the previous one; the last generation goes on."""
        cfg = ctx.recipe.stages.distill
        generations, histories, info = [], [], {}
        teacher_module = state.teacher.module
        family = ctx.family(ctx.recipe.student)
        for g in range(cfg.generations):
            student = state.student if g == 0 else family.new(ctx.recipe.student, ctx.data.spec, ctx.device,
                                                                teacher=state.teacher)
            history, gen_info = self._generation(ctx, state, cfg, stage_dir, g, student, teacher_module)
            histories.append(history)
            info = info or gen_info
            generations.append(student)
            teacher_module = student.module.eval()
        state.student = generations[-1]
        record = {"history": histories[-1] or [], "temperature": cfg.temperature, "kd_weight": cfg.kd_weight,
                  "ce_weight": cfg.ce_weight, "features": [f.model_dump() for f in cfg.features],
                  "teacher_logits_cached": False, **info}
        if cfg.generations > 1:
            record["generations"] = [{"generation": g + 1, **self.evaluate(s, ctx)} for g, s in enumerate(generations)]
            if cfg.ensemble_generations:
                probs = torch.stack([torch.softmax(predict(s.module, ctx.data.x_test), -1) for s in generations]).mean(0)
                record["ensemble_accuracy"] = accuracy(probs, ctx.data.y_test)
        return record


@TASKS.register("image-classification")
class ImageClassification(Classification):
    name = "image-classification"
    datasets = ("digits", "npz", "folder")


@TASKS.register("text-classification")
class TextClassification(Classification):
    name = "text-classification"
    datasets = ("text",)
