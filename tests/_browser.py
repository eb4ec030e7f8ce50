"""Open an HTML file in headless Chromium and fail on console errors or broken images.

Shared by the report tests and the demo test: ``check_in_browser(html, screenshot)``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

#: where CI installs Chromium (Playwright drives this binary; no browser download)
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_or_skip() -> Path:
    """The Chromium binary, or skip the calling test when it is not installed."""
    if not CHROMIUM.is_file() and shutil.which("chromium") is None:
        pytest.skip(f"headless browser test needs Chromium at {CHROMIUM} (CI installs it)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    return CHROMIUM if CHROMIUM.is_file() else Path(str(shutil.which("chromium")))


def browser_problems(html_path: Path, screenshot: Path) -> list[str]:
    """Console errors, page errors, failed requests and broken images of a page.

    Also writes a full-page PNG screenshot to ``screenshot``.
    """
    from playwright.sync_api import sync_playwright

    executable = chromium_or_skip()
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(executable), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on(
                "console",
                lambda msg: problems.append(f"console {msg.type}: {msg.text}")
                if msg.type in ("error", "warning") else None,
            )  # fmt: skip
            page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
            page.on(
                "requestfailed",
                lambda req: problems.append(f"request failed: {req.url[:80]}"),
            )
            page.on(
                "request",
                lambda req: problems.append(f"external request: {req.url[:80]}")
                if not req.url.startswith(("file:", "data:")) else None,
            )  # fmt: skip
            page.goto(html_path.resolve().as_uri(), wait_until="load")
            broken = page.evaluate(
                """() => Array.from(document.images)
                    .map((img, i) => ({i, ok: img.complete && img.naturalWidth > 0,
                                       alt: img.alt || ''}))
                    .filter(x => !x.ok)
                    .map(x => `image ${x.i} (${x.alt.slice(0, 60)}) did not load`)"""
            )
            problems.extend(str(b) for b in broken)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return problems


def check_in_browser(html_path: Path, screenshot: Path) -> None:
    """Raise AssertionError listing every problem the page has in headless Chromium."""
    problems = browser_problems(html_path, screenshot)
    if problems:
        raise AssertionError(f"{html_path.name} in Chromium:\n  " + "\n  ".join(problems))
    data = screenshot.read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or len(data) < 10_000:
        raise AssertionError(f"screenshot {screenshot.name} is not a non-trivial PNG")
