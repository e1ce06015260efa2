"""The report's app snippets for ExecuTorch (.pte: Kotlin and Swift) and LiteRT (.tflite: Kotlin), written
from the artifact's own record: its input/output shapes, names and, for an int8 .tflite, the scales and zero
points its int8 tensors use."""

from __future__ import annotations

from pathlib import PurePosixPath


def _tensors(art: dict, kind: str) -> list[dict]:
    found = (art.get("io") or {}).get(kind) if isinstance(art.get("io"), dict) else None
    return [t for t in found if isinstance(t, dict)] if isinstance(found, list) else []


def _shape(tensor: dict, fallback: list[int]) -> list[int]:
    shape = tensor.get("shape")
    return [int(d) for d in shape] if isinstance(shape, list) and shape else fallback


def _labels_line(usage: dict) -> str:
    labels = usage.get("labels") if isinstance(usage.get("labels"), list) else []
    quoted = ['"' + str(x).replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"' for x in labels]
    return (f"val labels = listOf({', '.join(quoted)})" if 0 < len(labels) <= 20
            else 'val labels: List<String> = TODO("load the class names")')


def kotlin_pte(path: PurePosixPath, usage: dict, io_, art: dict) -> str:
    shape = _shape((_tensors(art, "inputs") or [{}])[0], io_.shape)
    return f"""import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

// Copy {path.name} from app/src/main/assets to context.filesDir first: Module.load reads a file path.
val module = Module.load(context.filesDir.resolve("{path.name}").absolutePath)
{_labels_line(usage)}

// pixels: FloatArray of {' * '.join(map(str, shape))} values, {io_.norm or 'as the model expects'}.
val input = Tensor.fromBlob(pixels, longArrayOf({', '.join(map(str, shape))}))
val scores = module.forward(EValue.from(input))[0].toTensor().dataAsFloatArray
println(labels[scores.indices.maxBy {{ scores[it] }}])"""


def swift_pte(path: PurePosixPath, usage: dict, io_, art: dict) -> str:
    shape = _shape((_tensors(art, "inputs") or [{}])[0], io_.shape)
    return f"""import ExecuTorch

// Add {path.name} to your app target (and the executorch + backend_xnnpack packages{
    ', backend_coreml' if art.get('kind') == 'pte-coreml' else ''}).
let module = Module(filePath: Bundle.main.path(forResource: "{path.stem}", ofType: "pte")!)

// pixels: [Float] of {' * '.join(map(str, shape))} values, {io_.norm or 'as the model expects'}.
let input = Tensor<Float>(pixels, shape: [{', '.join(map(str, shape))}])
let logits: Tensor<Float> = try module.forward(input)[0].tensor()!
let scores = logits.scalars()
print(scores.indices.max {{ scores[$0] < scores[$1] }}!)"""


def kotlin_tflite(path: PurePosixPath, usage: dict, io_, art: dict) -> str:
    inp, out = (_tensors(art, "inputs") or [{}])[0], (_tensors(art, "outputs") or [{}])[0]
    shape, out_shape = _shape(inp, io_.shape), _shape(out, [1, len(usage.get("labels") or []) or 1])
    size, classes = 1, out_shape[-1]
    for d in shape:
        size *= d
    int8 = "scale" in inp and str(inp.get("dtype")) == "int8"
    if int8:
        feed = (f"// {inp.get('name')}: int8 {shape}, quantized with the file's own scale and zero point.\n"
                f"val input = ByteBuffer.allocateDirect({size}).order(ByteOrder.nativeOrder())\n"
                f"for (x in pixels) input.put((x / {inp['scale']!r}f + ({inp['zero_point']})).roundToInt()"
                ".coerceIn(-128, 127).toByte())\n"
                f"val output = Array(1) {{ ByteArray({classes}) }}\n"
                "interpreter.run(input.rewind(), output)\n"
                f"// {out.get('name')}: int8, dequantized the same way\n"
                f"val scores = output[0].map {{ (it - ({out.get('zero_point', 0)})) * {out.get('scale', 1.0)!r}f }}")
    else:
        feed = (f"// {inp.get('name') or 'input'}: float32 {shape}\n"
                f"val input = ByteBuffer.allocateDirect({size} * 4).order(ByteOrder.nativeOrder())\n"
                "for (x in pixels) input.putFloat(x)\n"
                f"val output = Array(1) {{ FloatArray({classes}) }}\n"
                "interpreter.run(input.rewind(), output)\n"
                "val scores = output[0].toList()")
    return f"""import org.tensorflow.lite.Interpreter
import org.tensorflow.lite.support.common.FileUtil
import java.nio.ByteBuffer
import java.nio.ByteOrder{chr(10) + 'import kotlin.math.roundToInt' if int8 else ''}

// Put {path.name} in app/src/main/assets; `context` is your Activity. XNNPACK is LiteRT's default CPU delegate.
val interpreter = Interpreter(FileUtil.loadMappedFile(context, "{path.name}"), Interpreter.Options().setNumThreads(4))
{_labels_line(usage)}

// pixels: FloatArray of {size} values, {io_.norm or 'as the model expects'}.
{feed}
println(labels[scores.indices.maxBy {{ scores[it] }}])"""


# (title, artifact kind, snippet) in the order the report shows them
SNIPPETS = (("Kotlin (ExecuTorch, Android)", "pte", kotlin_pte), ("Swift (ExecuTorch, iOS)", "pte", swift_pte),
            ("Swift (ExecuTorch with Core ML, iOS)", "pte-coreml", swift_pte),
            ("Kotlin (LiteRT, Android)", "tflite", kotlin_tflite))
