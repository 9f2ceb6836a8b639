"""Is the data pipeline ever the bottleneck of training? Its images/s against the training step's.

    .venv/bin/python benchmarks/pipeline_speed.py --model centernet_dla34 --input-size 512 --threads 2

The pipeline is the training ``DataLoader`` as the trainer builds it (JPEG decoding, the random
affine crop to the input size, flip, colour and lighting augmentation, normalisation, targets:
heatmap, sizes, offsets, indices) with the config's default worker processes, over synthetic
480-640 px JPEG scenes (about COCO's image size), timed after its first batch. The training step
is ``Trainer.train_step`` (forward, loss, backward, Adam) on one of those batches. See
:func:`centernet.engine.benchmark.measure_pipeline`.
"""

import argparse

from centernet.engine.benchmark import HEADER, machine_description, measure_pipeline


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="centernet_dla34")
    parser.add_argument("--input-size", type=int, default=512)
    parser.add_argument("--workers", type=int, help="loader processes (default: the config's)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-images", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps")
    parser.add_argument("--threads", type=int, help="torch threads of the training step")
    args = parser.parse_args()

    print(f"{args.model}, {args.input_size}x{args.input_size}, batch {args.batch_size}: "
          f"{machine_description(args.threads)}")
    pipeline, step = measure_pipeline(args.model, (args.input_size, args.input_size), args.workers,
                                      args.batch_size, args.num_images, args.steps, args.threads)
    print(HEADER)
    print(pipeline.row())
    print(step.row())
    print(f"data pipeline / training step: {pipeline.images_per_s / step.images_per_s:.1f}x")


if __name__ == "__main__":
    main()
