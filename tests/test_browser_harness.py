"""The headless-Chromium harness (tests/_browser.py) can both pass a clean self-contained page and
catch each kind of problem a report page could have: a network request, a console error, an
uncaught exception, an image that does not decode. One browser launch per test."""

import base64
import os
import struct
import zlib

import pytest

import _browser
from _browser import find_chromium, load_page

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def tiny_png(width, height, rgb=(200, 30, 30)):
    """A real RGB PNG written by hand: signature, IHDR, one zlib IDAT, IEND."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + bytes(rgb) * width for _ in range(height))  # filter byte 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def png_size(data):
    """(width, height) from a PNG's IHDR."""
    assert data[:8] == PNG_SIGNATURE, data[:8]
    return struct.unpack(">II", data[16:24])


def data_uri(png):
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def write_page(folder, body, head="", name="page.html"):
    path = folder / name
    path.write_text(f"<!doctype html>\n<html><head><meta charset=utf-8><title>{name}</title>{head}"
                    f"</head>\n<body>{body}</body></html>\n", encoding="utf-8")
    return path


@pytest.fixture
def chromium():
    path = find_chromium()
    if path is None:
        pytest.skip("no Chromium to load pages in (apt-get install chromium, or set $BIOREPS_CHROMIUM)")
    return path


@pytest.mark.slow
def test_clean_page_passes_with_true_image_size_and_a_full_page_screenshot(chromium, tmp_path):
    body = (f'<h1>Study</h1><img alt=weights src="{data_uri(tiny_png(3, 2))}" width=300>'
            '<div style="height:2000px"></div><p>end</p>')
    shot = tmp_path / "shot.png"
    report = load_page(write_page(tmp_path, body), screenshot=shot)

    assert report.problems() == []
    assert report.requests == [] and report.errors == []
    assert report.title == "page.html"
    assert report.scroll_height > 2000
    [image] = report.images
    assert image["src"] == data_uri(tiny_png(3, 2))[:40]
    assert image["complete"] and image["decode_error"] is None
    assert (image["natural_width"], image["natural_height"]) == (3, 2)  # not the displayed 300
    data = shot.read_bytes()
    width, height = png_size(data)
    assert width == 1280 and height >= report.scroll_height > 900  # the page beyond the viewport
    assert report.screenshot == str(shot)


@pytest.mark.slow
def test_network_requests_are_reported(chromium, tmp_path):
    # no internet needed: each request is sent, then fails
    page = write_page(tmp_path, '<img src="http://127.0.0.1:9/x.png">',
                      head='<link rel=stylesheet href="https://example.invalid/a.css">')
    report = load_page(page)

    assert sorted(report.requests) == ["http://127.0.0.1:9/x.png", "https://example.invalid/a.css"]
    problems = report.problems()
    assert "network request: http://127.0.0.1:9/x.png" in problems
    assert "network request: https://example.invalid/a.css" in problems


@pytest.mark.slow
def test_a_request_from_a_worker_started_after_load_is_reported(chromium, tmp_path):
    script = ("addEventListener('load', () => setTimeout(() => new Worker(URL.createObjectURL("
              "new Blob([\"fetch('http://127.0.0.1:9/from-worker').catch(() => 0)\"]))), 50))")
    report = load_page(write_page(tmp_path, f"<script>{script}</script>"))

    assert report.requests == ["http://127.0.0.1:9/from-worker"]


@pytest.mark.slow
@pytest.mark.parametrize("script, expected", [
    ('console.error("boom", 42)', "console.error: boom 42"),
    ('throw new Error("kaboom")', "uncaught Error: kaboom"),
])
def test_console_errors_and_uncaught_exceptions_are_reported(chromium, tmp_path, script, expected):
    report = load_page(write_page(tmp_path, f"<p>text</p><script>{script}</script>"))

    assert report.requests == []
    assert any(e.startswith(expected) for e in report.errors), report.errors
    assert any(p.startswith(f"error: {expected}") for p in report.problems())


@pytest.mark.slow
def test_an_image_that_does_not_decode_is_reported(chromium, tmp_path):
    broken = "data:image/png;base64,iVBORw0KGgo!!!not-base64!!!"
    truncated = data_uri(tiny_png(4, 4)[:40])  # header only: the pixel data is cut off
    body = "".join(f'<img src="{src}">' for src in (data_uri(tiny_png(4, 4)), broken, truncated))
    report = load_page(write_page(tmp_path, body))

    good, bad, cut = report.images
    assert (good["natural_width"], good["natural_height"], good["decode_error"]) == (4, 4, None)
    for image in (bad, cut):
        assert image["complete"] and image["decode_error"] is not None
        assert (image["natural_width"], image["natural_height"]) == (0, 0)
    image_problems = [p for p in report.problems() if p.startswith("image")]
    assert [p.split(" (")[0] for p in image_problems] == ["image 1", "image 2"]
    assert all("did not decode" in p for p in image_problems)
    assert report.requests == []


@pytest.mark.slow
def test_a_lazy_image_below_the_fold_is_loaded_and_checked(chromium, tmp_path):
    body = (f'<div style="height:5000px"></div>'
            f'<img loading=lazy src="{data_uri(tiny_png(5, 7))}">')
    report = load_page(write_page(tmp_path, body), timeout=20)

    [image] = report.images
    assert (image["complete"], image["natural_width"], image["natural_height"]) == (True, 5, 7)
    assert report.problems() == []


def test_problems_lists_an_unloaded_or_empty_image_but_not_a_page_without_images():
    report = _browser.PageReport(url="file:///x.html")
    assert report.problems() == []
    report.images = [
        {"src": "a", "complete": False, "natural_width": 0, "natural_height": 0, "decode_error": None},
        {"src": "b", "complete": True, "natural_width": 3, "natural_height": 0, "decode_error": None},
        {"src": "c", "complete": True, "natural_width": 3, "natural_height": 2, "decode_error": None},
    ]
    assert report.problems() == ["image 0 ('a') did not finish loading",
                                 "image 1 ('b') has zero size (3x0)"]


@pytest.mark.slow
def test_a_page_that_never_loads_times_out_and_chromium_is_cleaned_up(chromium, tmp_path, monkeypatch):
    browsers = []
    close = _browser._Browser.close
    monkeypatch.setattr(_browser._Browser, "close", lambda self: (browsers.append(self), close(self)))
    workdir = tmp_path / "tmp"
    workdir.mkdir()
    monkeypatch.setattr(_browser.tempfile, "tempdir", str(workdir))
    page = write_page(tmp_path, "<script>for (;;) {}</script>")

    with pytest.raises(RuntimeError, match=r"did not finish in time while loading file://.*page\.html"):
        load_page(page, timeout=4)
    [browser] = browsers
    assert browser.proc.poll() is not None  # Chromium was killed
    assert list(workdir.iterdir()) == []  # and its profile removed


def test_a_chromium_that_dies_raises_with_its_stderr(tmp_path, monkeypatch):
    fake = tmp_path / "fake-chromium"
    fake.write_text("#!/bin/sh\necho 'fake chromium: cannot open display' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("BIOREPS_CHROMIUM", str(fake))
    page = write_page(tmp_path, "<p>hi</p>")

    with pytest.raises(RuntimeError, match=r"(?s)exit status 3.*fake chromium: cannot open display"):
        load_page(page, timeout=20)


def test_find_chromium_prefers_the_environment_variable(tmp_path, monkeypatch):
    fake = tmp_path / "my-chrome"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("BIOREPS_CHROMIUM", str(fake))
    assert find_chromium() == str(fake)
    monkeypatch.setenv("BIOREPS_CHROMIUM", str(tmp_path / "missing"))
    assert find_chromium() is None
    monkeypatch.delenv("BIOREPS_CHROMIUM")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_chromium() is None
    (tmp_path / "chromium-browser").write_text("#!/bin/sh\n")
    (tmp_path / "chromium-browser").chmod(0o755)
    assert find_chromium() == str(tmp_path / "chromium-browser")


def test_load_page_names_a_missing_page(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no HTML page to load at .*absent\.html"):
        load_page(tmp_path / "absent.html")
    assert not os.path.exists(tmp_path / "absent.html")
