"""Look at the report as a person would: render ``index.html`` in headless Chromium.

:func:`check_page` opens the page twice in a fresh browser profile: a copy in an empty folder,
with a probe script inserted first in ``<head>`` that records errors (scripts, resources,
``console.error``) and, once the page has loaded, every image that did not decode; then the
page itself, for a screenshot and the console messages Chromium logs. The copy sits alone in
its folder, so a figure the page still loads from a file shows up as a broken image: the page
must carry everything it shows. It also lists every reference (``src``, ``href``, ``url()``)
to anything but the page itself or a ``data:`` URI.

``python -m lightnets.lab.reproduce.browser REPORT/index.html SHOT.png`` checks a report and
keeps its screenshot (the README's is made so).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from lightnets.errors import InvalidArgumentError, MissingDependencyError

__all__ = ["BROWSERS", "PageCheck", "check_page", "find_browser"]

#: Executable names tried, in order (Debian's package is ``chromium``).
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PROBE_ID = "lightnets-probe"
PROBE = (
    """<script>(function () {
  var errors = [];
  window.addEventListener("error", function (event) {
    var target = event.target;
    if (target && target !== window && (target.src || target.href)) {
      errors.push("failed to load " + String(target.src || target.href).slice(0, 80));
    } else {
      errors.push(String(event.message));
    }
  }, true);
  var original = console.error;
  console.error = function () {
    errors.push(Array.prototype.join.call(arguments, " "));
    return original.apply(console, arguments);
  };
  window.addEventListener("load", function () {
    var broken = [];
    for (var i = 0; i < document.images.length; i++) {
      var image = document.images[i];
      if (!image.complete || image.naturalWidth === 0) {
        broken.push(image.alt || String(image.src).slice(0, 80));
      }
    }
    var out = document.createElement("pre");
    out.id = "PROBE_ID";
    out.textContent = JSON.stringify(
      {errors: errors, broken: broken, images: document.images.length});
    document.body.appendChild(out);
  });
})();</script>"""
).replace("PROBE_ID", PROBE_ID)
#: Chromium logs a page's console messages as ``...:CONSOLE:12] "text", source: URL (12)``.
CONSOLE = re.compile(r':CONSOLE[:(]\d+\)?\] "(?P<text>.*)", source: ')
REFERENCE = re.compile(r"""(?:\bsrc|\bhref)\s*=\s*["']([^"']*)["']|url\(\s*["']?([^"')]*)""")


@dataclass
class PageCheck:
    """What the browser saw: errors and console messages, images that did not decode, every
    reference to something outside the page, and where the screenshot is."""

    images: int
    console: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    external_references: list[str] = field(default_factory=list)
    screenshot: Path | None = None

    @property
    def ok(self) -> bool:
        return not (self.console or self.broken_images or self.external_references)


def find_browser() -> str | None:
    """The first of :data:`BROWSERS` on ``PATH``, or ``None``."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def external_references(html: str) -> list[str]:
    """Every ``src``/``href``/``url()`` that is neither a ``data:`` URI nor an anchor."""
    found = []
    for match in REFERENCE.finditer(html):
        target = (match.group(1) or match.group(2) or "").strip()
        if target and not target.startswith(("data:", "#")):
            found.append(target[:80])
    return found


def _run(
    browser: str, profile: Path, args: list[str], timeout: float
) -> subprocess.CompletedProcess:
    command = [
        browser,
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.insert(2, "--no-sandbox")  # Chromium's sandbox refuses to run as root
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def check_page(
    index: str | os.PathLike[str],
    screenshot: str | os.PathLike[str],
    *,
    width: int = 1280,
    height: int = 2000,
    timeout: float = 120.0,
) -> PageCheck:
    """Render ``index`` headless: the probe's findings and a ``width`` x ``height`` screenshot.

    Raises:
        MissingDependencyError: no Chromium on ``PATH`` (Debian: ``apt-get install chromium``).
    """
    browser = find_browser()
    if browser is None:
        raise MissingDependencyError(
            f"no headless browser found (tried {', '.join(BROWSERS)}): apt-get install chromium"
        )
    index, screenshot = Path(index).resolve(), Path(screenshot).resolve()
    if not index.is_file():
        raise InvalidArgumentError(f"{index} is not a file")
    html = index.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="lightnets-browser-") as scratch:
        folder = Path(scratch)
        probe = folder / "alone" / "probe.html"
        probe.parent.mkdir()
        probe.write_text(re.sub(r"<head>", "<head>" + PROBE, html, count=1), encoding="utf-8")
        dumped = _run(
            browser,
            folder / "profile-probe",
            ["--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
            timeout,
        )
        found = re.search(rf'<pre id="{PROBE_ID}">(.*?)</pre>', dumped.stdout, re.DOTALL)
        if found is None:
            raise RuntimeError(f"the probe did not report: {(dumped.stderr or '').strip()[-300:]}")
        report = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
        shot = _run(
            browser,
            folder / "profile-shot",
            [
                "--enable-logging=stderr",
                "--v=0",
                f"--window-size={width},{height}",
                f"--screenshot={screenshot}",
                index.as_uri(),
            ],
            timeout,
        )
    console = [m.group("text") for m in CONSOLE.finditer(shot.stderr)]
    return PageCheck(
        images=int(report["images"]),
        console=[*report["errors"], *console],
        broken_images=list(report["broken"]),
        external_references=external_references(html),
        screenshot=screenshot if screenshot.is_file() else None,
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m lightnets.lab.reproduce.browser INDEX.html SCREENSHOT.png")
        return 2
    check = check_page(args[0], args[1])
    print(
        f"{check.images} image(s); console: {check.console or 'nothing'}; broken images: "
        f"{check.broken_images or 'none'}; external references: "
        f"{check.external_references or 'none'}; screenshot: {check.screenshot}"
    )
    return 0 if check.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
