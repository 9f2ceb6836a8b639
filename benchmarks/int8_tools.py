"""Which tool makes the INT8 model: onnxruntime's static quantization (what ``centernet export
--quantize int8`` uses) against PyTorch's own x86 INT8 backend, on the same model, in one process.

    .venv/bin/python benchmarks/int8_tools.py --size 512 --threads 2 --repeat 5 [--models ...] [--torch-profile]

Per model (random weights: speed does not depend on them), the same calibration images (synthetic
scenes through the eval transform), batch 1, median of ``--repeat`` calls after one warm-up,
from the normalised image to the top-100 boxes:

- ``torch fp32``: our fastest exact PyTorch path (``optimize_for_inference``);
- ``onnxruntime fp32`` and ``onnxruntime INT8``: ``export_onnx`` and ``quantize_onnx`` (QDQ, per-
  channel int8 weights, uint8 activations, min-max calibration; the decode and the head's output
  convolutions in float);
- ``torch INT8 (x86)``: PyTorch's FX graph mode post-training quantization with the ``x86``
  backend's default qconfig (``prepare_fx`` / ``convert_fx``: conv-BN-ReLU fused, per-channel int8
  weights, uint8 activations observed by histogram) on the network, the head's output
  convolutions kept float as in our ONNX graph, our float decode reading its dequantized maps;
  once with every other layer quantized (PyTorch's default), once with the neck's depthwise
  ``ConvTranspose2d`` up-sampling also kept float (PyTorch's quantized transposed convolution is
  a slow kernel for them: 96 % of MobileNetV1's INT8 time by ``torch.profiler``).

PyTorch's newer PT2E flow (``X86InductorQuantizer``) has moved to torchao and runs through
``torch.compile``; it is not measured here. Random weights, so no accuracy is compared here (see
``int8_accuracy.py`` for onnxruntime's on trained models).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn


class Network(nn.Module):
    """backbone -> neck -> head without CenterNet.forward's input checks (FX cannot trace a branch
    on a tensor's shape); returns the three raw maps as a tuple."""

    def __init__(self, model):
        super().__init__()
        self.backbone, self.neck, self.head = model.backbone, model.neck, model.head

    def forward(self, images):
        maps = self.head(self.neck(self.backbone(images)))
        return maps["heatmap"], maps["wh"], maps["offset"]


def median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["centernet_dla34", "centernet_mbv1", "centernet_mbv3_large"])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--calibration-images", type=int, default=8)
    parser.add_argument("--torch-profile", action="store_true",
                        help="also print torch.profiler's top operators of one call of PyTorch's default INT8 model")
    args = parser.parse_args()

    import onnxruntime
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    from torch.fx.proxy import TraceError

    from centernet import create_model
    from centernet.allocator import keep_freed_memory
    from centernet.data.synthetic import generate_dataset
    from centernet.data.images import list_images, load_image
    from centernet.data.transforms import EvalTransform
    from centernet.engine.benchmark import machine_description
    from centernet.export import DetectionGraph, export_onnx, quantize_onnx
    from centernet.decode import decode
    from centernet.models.fuse import optimize_for_inference

    # torch.ao.quantization warns at each call that it is deprecated in favour of torchao (said above)
    warnings.filterwarnings("ignore", message="(?s).*torchao")
    torch.set_num_threads(args.threads)
    torch.backends.quantized.engine = "x86"
    keep_freed_memory()
    print(f"batch 1, {args.size}x{args.size}, median of {args.repeat}; {machine_description(args.threads)}")
    print("| model | torch fp32 (fastest) | onnxruntime fp32 | onnxruntime INT8 | torch INT8 (x86, FX) "
          "| torch INT8, ConvTranspose float |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as folder, torch.inference_mode():
        data = generate_dataset(Path(folder) / "data", num_train=args.calibration_images, num_val=0,
                                min_side=480, max_side=640)
        files = list_images(data["train_images"])
        transform = EvalTransform(input_size=(args.size, args.size), keep_res=False)
        batches = [torch.from_numpy(transform.at_scale(load_image(file))[0][None]).float() for file in files]
        for name in args.models:
            torch.manual_seed(0)
            model = create_model(name).eval()
            image = batches[0]
            fp32 = DetectionGraph(optimize_for_inference(model))
            torch_fp32 = median_ms(lambda: fp32(image), args.repeat)

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
            onnx_fp32 = export_onnx(model, Path(folder) / f"{name}.onnx", input_size=(args.size, args.size))
            onnx_int8 = quantize_onnx(onnx_fp32, Path(folder) / f"{name}_int8.onnx", files,
                                      calibration_count=len(files), calibration_method="minmax")
            sessions = [onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                        for path in (onnx_fp32, onnx_int8)]
            ort_fp32, ort_int8 = (median_ms(lambda s=s: s.run(None, {"images": image.numpy()}), args.repeat)
                                  for s in sessions)

            torch_int8 = []
            for float_transposed in (False, True):
                mapping = get_default_qconfig_mapping("x86")
                for branch in ("heatmap", "size", "offset"):  # the maps the decode reads, as in ONNX
                    mapping.set_module_name(f"head.{branch}.2", None)
                if float_transposed:
                    mapping.set_object_type(nn.ConvTranspose2d, None)
                try:
                    prepared = prepare_fx(Network(model).eval(), mapping, example_inputs=(image,))
                except TraceError as error:  # the deformable convolutions branch on tensor values
                    torch_int8.append(f"does not trace ({str(error).splitlines()[0]})")
                    continue
                for batch in batches:
                    prepared(batch)
                quantized = convert_fx(prepared)
                torch_int8.append(f"{median_ms(lambda q=quantized: decode(*q(image), k=100), args.repeat):.0f}")
                if args.torch_profile and not float_transposed:
                    with torch.profiler.profile() as profiler:
                        quantized(image)
                    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=5))
            print(f"| {name} | {torch_fp32:.0f} | {ort_fp32:.0f} | {ort_int8:.0f} | {torch_int8[0]} "
                  f"| {torch_int8[1]} |", flush=True)
    print(f"ms per image (wall); load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
