"""Headless Chromium for the tests of the course's HTML pages (compare.html, the audit report): Debian's `chromium`
package, which .ci/run installs. Each run gets a fresh profile under the test's tmp_path and no network."""
import os
import shutil
import subprocess

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)


def run_chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.iterdir()))}"  # a fresh profile for every run
    env = {**os.environ, "HOME": str(tmp_path)}
    return subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, env=env, check=False)


def hex_rgb(colour: str) -> tuple[int, int, int]:
    """'#1f5fa8' -> (31, 95, 168)."""
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def screenshot_has_colour(pixels, colour: str, x_range, height: int, tolerance: int = 40) -> bool:
    """Whether any pixel of the columns `x_range` (every second row) is within `tolerance` of `colour`."""
    target = hex_rgb(colour)
    return any(max(abs(a - b) for a, b in zip(pixels[x, y], target)) < tolerance
               for x in x_range for y in range(0, height, 2))
