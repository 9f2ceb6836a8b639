"""CPU speed of the deformable convolution: torchvision's op against our gather path.

    .venv/bin/python benchmarks/deform_conv_speed.py --threads 2 --repeat 5 [--backward] [--model]
        [--no-layers] [--cpu-time]

Times the 16 DCNv2 layers of DLA-34's neck at a 512x512 input (their shapes, with offsets of a
few pixels), forward (and forward + backward with ``--backward``); with ``--model`` also the
whole centernet_dla34 forward at 512x512. Prints medians in ms and the largest output difference.
"""

import argparse
import statistics
import time

import torch

from centernet import create_model
from centernet.models.deform_conv import DeformConv2d, modulated_deform_conv2d

# (in_channels, out_channels, size) of DLA-34's neck DCNs at a 512x512 input.
DLA34_DCN_SHAPES = ([(512, 256, 16), (256, 256, 32)] + 2 * [(256, 128, 32)]
                    + 2 * [(128, 128, 64)] + 4 * [(128, 64, 64)] + 5 * [(64, 64, 128)]
                    + [(256, 64, 32)])
IMPLEMENTATIONS = ("torchvision", "gather")
CLOCK = time.perf_counter


def median_ms(fn, repeat):
    fn()  # warm-up (timer: wall clock, or CPU time of this process with --cpu-time)
    times = []
    for _ in range(repeat):
        start = CLOCK()
        fn()
        times.append(CLOCK() - start)
    return 1000 * statistics.median(times)


def layer_inputs(in_channels, out_channels, size, requires_grad):
    x = torch.randn(1, in_channels, size, size, requires_grad=requires_grad)
    offset = (torch.randn(1, 18, size, size) * 2).requires_grad_(requires_grad)
    mask = torch.rand(1, 9, size, size, requires_grad=requires_grad)
    weight = (torch.randn(out_channels, in_channels, 3, 3) * 0.05).requires_grad_(requires_grad)
    bias = torch.randn(out_channels, requires_grad=requires_grad)
    return x, offset, mask, weight, bias


def run_layer(inputs, implementation, backward):
    out = modulated_deform_conv2d(*inputs, padding=1, implementation=implementation)
    if backward:
        out.sum().backward()
    return out


def bench_layers(repeat, backward):
    totals = dict.fromkeys(IMPLEMENTATIONS, 0.0)
    worst = 0.0
    for shape in sorted(set(DLA34_DCN_SHAPES), key=DLA34_DCN_SHAPES.index):
        count = DLA34_DCN_SHAPES.count(shape)
        inputs = layer_inputs(*shape, requires_grad=backward)
        with torch.set_grad_enabled(backward):
            outs = [run_layer(inputs, impl, False) for impl in IMPLEMENTATIONS]
            worst = max(worst, (outs[0] - outs[1]).abs().max().item())
            times = {impl: median_ms(lambda: run_layer(inputs, impl, backward), repeat)
                     for impl in IMPLEMENTATIONS}
        for impl in IMPLEMENTATIONS:
            totals[impl] += count * times[impl]
        print(f"{count} x {shape}: " + "  ".join(f"{k} {v:8.1f} ms" for k, v in times.items()))
    mode = "forward + backward" if backward else "forward"
    print(f"all 16 layers ({mode}): " + "  ".join(f"{k} {v:.0f} ms" for k, v in totals.items())
          + f"  speed-up x{totals['torchvision'] / totals['gather']:.2f}"
          + f"  max abs diff {worst:.1e}")


def bench_model(repeat):
    torch.manual_seed(0)
    model = create_model("centernet_dla34")
    images = torch.randn(1, 3, 512, 512)
    with torch.no_grad():  # give BN real statistics so activations (and offsets) are not tiny
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None
            if isinstance(module, DeformConv2d):
                torch.nn.init.normal_(module.conv_offset.weight, std=0.02)
        model(images)
    model.eval()
    outs, times = {}, {}
    with torch.no_grad():
        for impl in IMPLEMENTATIONS:
            DeformConv2d.implementation = impl
            outs[impl] = model(images)["heatmap"]
            times[impl] = median_ms(lambda: model(images), repeat)
        DeformConv2d.implementation = "auto"
    diff = (outs["torchvision"] - outs["gather"]).abs().max().item()
    print("centernet_dla34 512x512 forward: "
          + "  ".join(f"{k} {v:.0f} ms" for k, v in times.items())
          + f"  speed-up x{times['torchvision'] / times['gather']:.2f}  heatmap max abs diff "
          + f"{diff:.1e} (heatmap std {outs['gather'].std().item():.2f})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backward", action="store_true", help="time forward + backward")
    parser.add_argument("--model", action="store_true", help="also time the whole model")
    parser.add_argument("--no-layers", action="store_true", help="skip the per-layer timings")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time with this process's CPU time (steadier on a busy machine)")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.cpu_time else time.perf_counter
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if not args.no_layers:
        bench_layers(args.repeat, args.backward)
    if args.model:
        bench_model(args.repeat)


if __name__ == "__main__":
    main()
