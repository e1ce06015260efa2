"""Precision plan: which blocks of a CNN/MLP student run int8 and which stay fp32, chosen by measured latency.

Int8 is not free: every quantized tensor adds QuantizeLinear/DequantizeLinear work at the boundaries, and at
small channel counts that can outweigh the integer kernels (a ResNet-20 pruned to half its channels ran
slower in int8 than in fp32 on one x86 thread). So the student's quantizable layers are grouped into blocks (the model's
top-level children that hold a Conv/Gemm/MatMul: ResNet stem, layer1..3, fc; CNN conv blocks; MLP layers)
and every combination of int8 and fp32 blocks is built with ONNX Runtime static quantization (QDQ, U8
activations, S8 per-channel weights) and measured:

- latency: ONNX Runtime on this machine for host targets (labelled "measured"), else the estimator
  (labelled "estimated"); candidates are timed alternately, round by round, and the median p50 kept;
- accuracy effect: accuracy on labelled training images the calibration did not use (the held-out split stays
  untouched for the report's figures); top-1 agreement with the fp32 model is recorded beside it.

The plan is the fastest combination whose accuracy is within `tolerance` of the best one's; timings within TIE
of the fastest count as equal, and among those the plan with the most int8 blocks (the smallest file) wins; a
mixed plan must also beat all-int8 by more than that margin, else all-int8 is chosen.
Post-training quantization is the pessimistic side of what QAT will reach, so the search errs towards fp32.
Under a latency budget the plan is the most accurate one that meets it. With more blocks than
EXHAUSTIVE_BLOCKS, blocks are dropped from int8 one at a time instead (greedy, from all-int8).
The qat stage then trains with only the plan's int8 blocks quantized, and export writes that mix. When no plan
with an int8 block is faster than fp32, the plan is all-fp32 and the report says int8 does not pay here."""

from __future__ import annotations

import itertools
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgedistill import latency as latency_mod
from edgedistill import quantize
from edgedistill.runtimes import onnxruntime as ortr

QUANTIZABLE = {"Conv", "Gemm", "MatMul"}
EXHAUSTIVE_BLOCKS = 6  # 2^6 = 64 candidates at most
TIE = 0.03  # p50s within 3% are one speed on a shared machine (the prune stage's "not faster" margin)


@dataclass
class Candidate:
    int8: list[str]  # blocks in int8; the rest stay fp32
    p50_ms: float = 0.0
    accuracy: float = 0.0  # on the labelled check images
    agreement: float = 0.0  # top-1 agreement with the fp32 model there
    max_abs: float = 0.0  # largest logit difference from fp32 there
    path: str = ""


@dataclass
class Plan:
    blocks: list[str]  # every quantizable block, in graph order
    int8: list[str]  # the chosen int8 blocks
    latency_kind: str  # "measured" (on this machine, for host targets) or "estimated"
    candidates: list[Candidate] = field(default_factory=list)
    budget_ms: float | None = None
    verdict: str = ""

    @property
    def fp32(self) -> list[str]:
        return [b for b in self.blocks if b not in self.int8]

    @property
    def all_fp32(self) -> bool:
        """No block pays for int8 on this target: QAT is skipped and the fp32 file is the one to ship."""
        return not self.int8

    def summary(self) -> dict:
        """What the qat and export records carry of the plan."""
        return {"int8": self.int8, "fp32": self.fp32, "verdict": self.verdict}

    def to_json(self) -> dict:
        out = asdict(self)
        out["fp32"] = self.fp32
        for c in out["candidates"]:
            c.pop("path")
        return out

    @classmethod
    def from_json(cls, d: dict) -> "Plan":
        cands = [Candidate(**c) for c in d.get("candidates", [])]
        return cls(d["blocks"], d["int8"], d["latency_kind"], cands, d.get("budget_ms"), d.get("verdict", ""))

    def nodes(self, model) -> list[str]:
        """The ONNX nodes of `model` (an fp32 export of the student) that the plan quantizes."""
        groups = onnx_blocks(model)
        return [n for b in self.int8 for n in groups.get(b, [])]


def block_of(weight_name: str) -> str:
    """'layer2.0.conv1.weight' -> 'layer2'; 'features.3.weight' -> 'features.3' (a Sequential's children are
    its blocks)."""
    parts = weight_name.split(".")
    if parts[0] in ("features", "layers", "blocks") and len(parts) > 2 and parts[1].isdigit():
        return ".".join(parts[:2])
    return parts[0]


def onnx_blocks(model) -> dict[str, list[str]]:
    """Block -> names of its quantizable ONNX nodes, in graph order. A node belongs to the block of its
    weight initializer (the dynamo exporter keeps the torch parameter names)."""
    inits = {i.name for i in model.graph.initializer}
    out: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type in QUANTIZABLE:
            weight = next((i for i in node.input[1:2] if i in inits), None)
            if weight is not None:
                out.setdefault(block_of(weight), []).append(node.name)
    return out


def _evaluate(cands: list[Candidate], reference: np.ndarray, check: np.ndarray, labels: np.ndarray, target,
              rounds: int, repeats: int) -> str:
    for c in cands:
        # accuracy in the target's int8 arithmetic (edgedistill.int8_arithmetic), timing on this CPU's kernels
        by_reference = bool(c.int8) and ortr.int8_execution(target) == ortr.REFERENCE
        logits = ortr.logits(ortr.session(Path(c.path), ortr.host_threads(2), reference=by_reference), check)
        c.accuracy = float((logits.argmax(-1) == labels).mean())
        c.agreement = float((logits.argmax(-1) == reference.argmax(-1)).mean())
        c.max_abs = float(np.abs(logits - reference).max())
    if not target.runs_on_host():
        for c in cands:
            c.p50_ms = latency_mod.for_file(Path(c.path), target)["p50"]
        return "estimated"
    threads = ortr.host_threads(target.threads)
    sessions = [ortr.session(Path(c.path), threads) for c in cands]
    x = check[:1]
    runs: list[list[float]] = [[] for _ in cands]
    for _ in range(rounds):  # alternate, so drift on a shared machine hits every candidate alike
        for i, s in enumerate(sessions):
            runs[i].append(ortr.latency_ms(s, x, warmup=10, repeats=repeats)["p50"])
    for c, r in zip(cands, runs):
        c.p50_ms = float(np.median(r))
    return "measured"


def _choose(cands: list[Candidate], tolerance: float, budget_ms: float | None) -> tuple[Candidate, str]:
    best = max(c.accuracy for c in cands)
    fp32 = next((c for c in cands if not c.int8), None)
    if budget_ms is not None:
        meeting = [c for c in cands if c.p50_ms <= budget_ms]
        if meeting:
            pick = max(meeting, key=lambda c: (c.accuracy, -c.p50_ms))
            return pick, f"the most accurate plan within the {budget_ms} ms budget"
        pick = min(cands, key=lambda c: c.p50_ms)
        return pick, f"no plan meets the {budget_ms} ms budget; the fastest is chosen"
    ok = [c for c in cands if c.accuracy >= best - tolerance]
    fastest = min(c.p50_ms for c in ok)
    ties = [c for c in ok if c.p50_ms <= fastest * (1 + TIE)]
    pick = max(ties, key=lambda c: (len(c.int8), c.accuracy, -c.p50_ms))
    uniform = max(cands, key=lambda c: len(c.int8))  # every block int8 that may be
    if pick.int8 and uniform in ok and uniform.p50_ms <= pick.p50_ms * (1 + TIE):
        pick = uniform  # a mixed plan must beat all-int8 by more than the timing noise to be worth shipping
    if not pick.int8:
        why = ("no plan with int8 blocks is faster than fp32 here" if fp32 is None or
               not any(c.int8 and c.p50_ms < fp32.p50_ms * (1 - TIE) for c in cands)
               else f"the faster int8 plans lose more than {100 * tolerance:.1f} points of accuracy")
        return pick, f"all fp32: {why}"
    if len(pick.int8) == len(max(cands, key=lambda c: len(c.int8)).int8):
        return pick, "all int8: the fastest within the accuracy tolerance"
    return pick, "mixed: the fastest within the accuracy tolerance"


def search(fp32_path: Path, calibration: np.ndarray, check: np.ndarray, labels: np.ndarray, target, workdir: Path,
           *, tolerance: float = 0.002, budget_ms: float | None = None, keep_fp32: list[str] = (), rounds: int = 7,
           repeats: int = 200) -> Plan:
    """Build, measure and choose among int8/fp32 block combinations of the fp32 ONNX at `fp32_path`.
    `calibration` feeds the quantizer; `check` with its `labels` (other training images) measures accuracy;
    `keep_fp32` blocks are never int8."""
    import onnx

    from edgedistill.errors import UserError

    groups = onnx_blocks(onnx.load(str(fp32_path)))
    unknown = sorted(set(keep_fp32) - set(groups))
    if unknown:
        raise UserError(f"stages.precision.keep_fp32: no block {unknown[0]!r} in this student; its blocks are "
                        f"{', '.join(groups)}")
    all_blocks = list(groups)
    names = [b for b in all_blocks if b not in keep_fp32]
    reference = ortr.logits(ortr.session(fp32_path, ortr.host_threads(2)), check)

    def build(int8: list[str]) -> Candidate:
        if not int8:
            return Candidate([], path=str(fp32_path))
        path = workdir / f"plan-{len(list(workdir.glob('plan-*.onnx'))):03d}.onnx"
        quantize.ptq_onnx(fp32_path, path, calibration, nodes_to_quantize=[n for b in int8 for n in groups[b]],
                          weight_range=target.int8_weight_range)
        return Candidate(list(int8), path=str(path))

    if len(names) <= EXHAUSTIVE_BLOCKS:
        cands = [build([b for b, on in zip(names, mask) if on]) for mask in itertools.product([0, 1], repeat=len(names))]
        kind = _evaluate(cands, reference, check, labels, target, rounds, repeats)
    else:  # greedy: from all-int8, move to fp32 the block whose removal helps most, while it helps
        cands = [build([]), build(names)]
        kind = _evaluate(cands, reference, check, labels, target, rounds, repeats)
        current = cands[1]
        while current.int8:
            trial = [build([b for b in current.int8 if b != drop]) for drop in current.int8]
            kind = _evaluate(trial, reference, check, labels, target, rounds, repeats)
            cands += trial
            better = min(trial, key=lambda c: c.p50_ms)
            if better.p50_ms >= current.p50_ms and better.accuracy <= current.accuracy:
                break
            current = better
    pick, verdict = _choose(cands, tolerance, budget_ms)
    return Plan(all_blocks, pick.int8, kind, cands, budget_ms, verdict)


def search_student(module, spec, calibration: np.ndarray, check: np.ndarray, labels: np.ndarray, target,
                   **kw) -> Plan:
    """search() on an fp32 ONNX export of a torch student."""
    import copy

    from edgedistill.exporters.onnx import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fp32.onnx"
        export_onnx(copy.deepcopy(module).cpu().eval(), spec, path, 18)
        return search(path, calibration, check, labels, target, Path(tmp), **kw)


