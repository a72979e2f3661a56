"""compare.html: one self-contained, escaped page that a real browser renders with the prompts and both columns.

The browser test runs Chromium headless (Debian's `chromium` package; .ci/run installs it) on the page, reads the
DOM it built and takes a screenshot. It is skipped, saying why, only where no Chromium is installed.
"""
import re
from html.parser import HTMLParser

import pytest

from course_utils.report import BASE_COLOUR, TUNED_COLOUR, compare_html, write_compare_html
from course_utils.stylometry import author_reference, comparison_rows, style_profile
from tests.browser import chromium, run_chromium, screenshot_has_colour

AUTHOR = ["“Where are you going?” she asked. “To the café,” I said. We walked down the street in the rain.",
          "It was hot. The road was white and dusty. We drank the wine, and it was cold and good.",
          "He did not say anything. The waiter came and we ordered. It was a fine day."]
PROMPTS = [f"Prompt {i}: the river ran <fast> & cold" for i in range(1, 6)]
BASE = [f"Base completion {i}: whereupon the gentleman, having considered the matter at length, resolved to "
        f"depart. <script>alert('x')</script>" for i in range(1, 6)]
TUNED = [f"Tuned completion {i}: “Yes,” he said. It was good.\n\nWe went out." for i in range(1, 6)]
MANIFEST = {"profile": {"name": "tiny"}, "seed": 0, "base_model": {"name": "tiny", "revision": "sha256:ab"}}


def page_kwargs() -> dict:
    reference = author_reference(AUTHOR)
    rows = comparison_rows(reference, {"base": style_profile(" ".join(BASE)), "tuned": style_profile(" ".join(TUNED))})
    return dict(title="Hemingway style lab", prompts=PROMPTS, base=BASE, tuned=TUNED, rows=rows, manifest=MANIFEST,
                figures={"distance to the author": "2.10 -> 0.80"}, notice="Public domain in the US only.")


def test_text_is_escaped():
    page = compare_html(**page_kwargs())
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "the river ran &lt;fast&gt; &amp; cold" in page


def test_page_is_self_contained():
    page = compare_html(**page_kwargs())
    assert not re.search(r"""(?:src|href)\s*=|<link|<script|@import|url\(""", page, re.IGNORECASE)
    assert "default-src 'none'" in page  # the page's Content-Security-Policy forbids any network access


def test_page_has_prompts_columns_table_chart_and_manifest():
    page = compare_html(**page_kwargs())
    assert page.count('class="column base"') == page.count('class="column tuned"') == 5
    assert '<table class="stylometry">' in page and "<svg" in page
    assert "&quot;revision&quot;: &quot;sha256:ab&quot;" in page
    assert "Public domain in the US only." in page


def test_one_completion_per_prompt_is_required():
    kwargs = page_kwargs()
    kwargs["tuned"] = TUNED[:4]
    with pytest.raises(ValueError, match="5 prompts, 5 base and 4 tuned"):
        compare_html(**kwargs)


def test_write_is_atomic_and_readable(tmp_path):
    path = write_compare_html(tmp_path / "out" / "compare.html", **page_kwargs())
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in path.parent.iterdir()] == ["compare.html"]  # no temporary file left behind
    assert path.stat().st_mode & 0o044 == 0o044


class _Columns(HTMLParser):
    """Collects the text of the prompts and of each column from the DOM Chromium dumps."""

    def __init__(self):
        super().__init__()
        self.stack, self.texts = [], {"prompt": [], "column base": [], "column tuned": []}

    def handle_starttag(self, tag, attrs):
        self.stack.append(dict(attrs).get("class") if dict(attrs).get("class") in self.texts else None)
        if self.stack[-1]:
            self.texts[self.stack[-1]].append("")

    def handle_endtag(self, tag):
        if self.stack:
            self.stack.pop()

    def handle_data(self, data):
        owner = next((c for c in reversed(self.stack) if c), None)
        if owner:
            self.texts[owner][-1] += data


@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (Debian: apt-get install -y chromium); "
                                               "the browser rendering of compare.html is not checked")
def test_compare_html_renders_prompts_and_both_columns_in_headless_chromium(tmp_path):
    from PIL import Image

    path = write_compare_html(tmp_path / "compare.html", **page_kwargs())
    url = path.resolve().as_uri()

    dom = run_chromium(tmp_path, "--dump-dom", "--virtual-time-budget=2000", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = _Columns()
    parsed.feed(dom.stdout)
    assert [t.strip() for t in parsed.texts["prompt"]] == PROMPTS
    assert [t.strip() for t in parsed.texts["column base"]] == [f"Base model{b}" for b in BASE]
    assert all(t.startswith("Tuned model") and "“Yes,” he said." in t for t in parsed.texts["column tuned"])

    shot = tmp_path / "compare.png"
    result = run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1400", url)
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    width, height = image.size
    assert (width, height) == (1280, 1400)
    pixels = image.load()
    inked = sum(1 for x in range(0, width, 4) for y in range(0, height, 4) if sum(pixels[x, y]) < 600)
    assert inked > 0.01 * (width // 4) * (height // 4), "the screenshot is (nearly) blank"

    def has_colour(colour, x_range) -> bool:  # the coloured rule above each column
        return screenshot_has_colour(pixels, colour, x_range, height)

    assert has_colour(BASE_COLOUR, range(0, width // 2, 8)), "the base column is not drawn on the left"
    assert has_colour(TUNED_COLOUR, range(width // 2, width, 8)), "the tuned column is not drawn on the right"
    assert not has_colour(TUNED_COLOUR, range(0, width // 2, 8))
