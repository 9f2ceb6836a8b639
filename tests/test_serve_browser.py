"""The server's page in a real browser (headless Chromium driven by Selenium): an image is chosen,
its boxes are drawn where the API puts them, and the score slider filters them without a new request.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them); skipped with the
reason when they are missing, except under ``CENTERNET_REQUIRE_BROWSER=1`` (set by ``.ci/run`` once
it has installed them), where a missing browser fails."""

import json
import os

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'centernet[serve]')")
pytest.importorskip("selenium", reason="selenium is not installed (pip install 'centernet[test]')")

from test_serve import SPOTS, encode, post_image, request, spot_detector, spot_image  # noqa: E402

from centernet.serve import ServeOptions, background_server  # noqa: E402
from centernet.serve.browser import chromium, drawn_boxes, find_chromium, open_page, set_threshold, upload  # noqa: E402

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    if find_chromium() is None:
        message = "chromium or chromedriver missing: apt-get install chromium chromium-driver"
        if os.environ.get("CENTERNET_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    with chromium(width=1000, height=800) as driver:
        yield driver


def test_the_page_draws_the_boxes_and_the_slider_filters_them(browser, tmp_path):
    image = spot_image(SPOTS)  # five spots, brightness 1.0 down to 0.45
    path = tmp_path / "spots.png"
    path.write_bytes(encode(image))
    with background_server(spot_detector(), ServeOptions(score_threshold=0.3)) as url:
        expected = post_image(url, encode(image), score_threshold=0)
        assert len(expected["scores"]) == len(SPOTS)
        open_page(browser, url)
        upload(browser, path)
        requests_after_upload = json.loads(request(url, "GET", "/health")[2])["requests"]

        def shown_above(threshold):
            return sorted(score for score in expected["scores"] if score > threshold)

        boxes = drawn_boxes(browser)  # at the server's default threshold, 0.3
        assert sorted(box["score"] for box in boxes) == pytest.approx(shown_above(0.3)) and len(boxes) == 4
        for box in boxes:  # each rect in image pixels, labelled with its class and score
            i = expected["scores"].index(min(expected["scores"], key=lambda s: abs(s - box["score"])))
            x1, y1, x2, y2 = expected["boxes"][i]
            assert (box["x"], box["y"], box["width"], box["height"]) == pytest.approx((x1, y1, x2 - x1, y2 - y1),
                                                                                      abs=0.01)
            assert box["text"] == f"{expected['classes'][i]} {expected['scores'][i]:.2f}"
        counts = {}
        for threshold in (0.0, 0.5, 0.85):
            set_threshold(browser, threshold)
            counts[threshold] = len(drawn_boxes(browser))
            assert sorted(box["score"] for box in drawn_boxes(browser)) == pytest.approx(shown_above(threshold))
            assert browser.find_element("id", "count").get_attribute("data-count") == str(counts[threshold])
        assert counts == {0.0: 5, 0.5: 3, 0.85: 1}
        # the slider filtered in the page: no request went to the model
        assert json.loads(request(url, "GET", "/health")[2])["requests"] == requests_after_upload

        # the boxes sit on the image where the API puts them: screen position = image position x zoom
        on_screen = browser.execute_script("""
            const photo = document.getElementById('photo').getBoundingClientRect();
            const box = document.querySelector('#overlay rect.box').getBoundingClientRect();
            return [photo.left, photo.top, photo.width, box.left, box.top, box.width, box.height];""")
        left, top, width, box_left, box_top, box_width, box_height = on_screen
        zoom = width / expected["width"]
        x1, y1, x2, y2 = expected["boxes"][0]  # the brightest spot: shown at every threshold
        assert box_left == pytest.approx(left + x1 * zoom, abs=2) and box_top == pytest.approx(top + y1 * zoom, abs=2)
        assert box_width == pytest.approx((x2 - x1) * zoom, abs=3) and box_height == pytest.approx((y2 - y1) * zoom, abs=3)
        assert "ms round trip" in browser.find_element("id", "latency").text


def test_the_page_shows_the_servers_error_for_a_file_that_is_not_an_image(browser, tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not a picture")
    with background_server(spot_detector()) as url:
        open_page(browser, url)
        with pytest.raises(RuntimeError, match="notes.png: .*not a readable image"):
            upload(browser, path)
