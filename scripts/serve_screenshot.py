"""The README's picture of `centernet serve`: start the server, open its page in headless Chromium,
choose an image, and save the page as a PNG.

    python scripts/serve_screenshot.py --weights runs/demo/best.pt \\
        --image data/synth/val/images/000000.jpg --out docs/serve.png

Needs Debian's chromium + chromium-driver (apt-get install chromium chromium-driver), the serve
extra and selenium (`make install` installs both). Arguments after `--` go to `centernet serve`
(e.g. `-- --model centernet_dla34 --pretrained` instead of --weights).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from centernet.serve import server_process
from centernet.serve.browser import chromium, drawn_boxes, open_page, set_threshold, upload


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    serve_args = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", help="checkpoint to serve (or give serve's model flags after --)")
    parser.add_argument("--image", required=True, help="the image to choose on the page")
    parser.add_argument("--out", default="docs/serve.png")
    parser.add_argument("--threshold", type=float, help="move the score slider here (default: the server's)")
    parser.add_argument("--width", type=int, default=1280, help="browser window, CSS pixels")
    parser.add_argument("--height", type=int, default=860)
    args = parser.parse_args(own)
    if args.weights:
        serve_args = ["--weights", args.weights, *serve_args]
    if not serve_args:
        parser.error("give --weights CHECKPOINT, or centernet serve's model flags after --")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with server_process(serve_args + ["--log-level", "warning"]) as (url, _), \
            chromium(args.width, args.height) as driver:
        open_page(driver, url)
        upload(driver, args.image)
        if args.threshold is not None:
            set_threshold(driver, args.threshold)
        shown = len(drawn_boxes(driver))
        if not driver.save_screenshot(str(out)):
            raise OSError(f"could not write {out}")
    print(f"{out}: the page with {shown} box(es) drawn on {args.image}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
