"""Browser tests: Serena's page served by a real uvicorn server, driven by Playwright in Debian's
Chromium (`apt-get install chromium`; `.ci/run` installs it). Without a browser every test here is
skipped with one plain reason. Screenshots go to `test/.artifacts/browser/` (not committed).

Fixtures:
- `ui_serving` / `ui_server`: the session runtime (`serena`) served by `webui.UiServer` (which rebuilds
  the app on a restart request) at a free loopback port; the server object / its URL.
- `page`: a fresh browser page at that URL, with the page's console errors and uncaught exceptions
  collected in `page.serena_errors` (a test that expects none asserts it is empty).
- `shot(page, name)`: save a full-page screenshot as an artifact.
"""
from __future__ import annotations

import os
import shutil

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ARTIFACTS = os.path.join(os.path.dirname(HERE), ".artifacts", "browser")
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path() -> str | None:
    """The system Chromium (SERENA_CHROMIUM overrides), or None."""
    given = os.environ.get("SERENA_CHROMIUM")
    if given:
        return given if os.path.exists(given) else None
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def pytest_collection_modifyitems(config, items):
    reason = None
    try:
        import playwright  # noqa: F401
    except ImportError:
        reason = "browser tests skipped: the playwright package is not installed (requirements-test.txt)"
    if reason is None and chromium_path() is None:
        reason = "browser tests skipped: no Chromium found (apt-get install chromium, or set SERENA_CHROMIUM)"
    if reason:
        for item in items:
            if item.nodeid.startswith("test/browser/") or "/browser/" in str(item.fspath):
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def ui_serving(serena):
    """`webui.UiServer` (API + UI, rebuilt on "Reload UI" / "Apply and restart UI") on the session
    runtime, at a free loopback port."""
    import socket

    import webui
    from modules import shared
    # A notification sound in the data folder: the page then plays it after each job (its bytes are
    # not real MP3; the page counts the plays in window.serena_notification_played).
    with open(os.path.join(shared.data_paths.data_path, "notification.mp3"), "wb") as f:
        f.write(b"ID3 serena test sound")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serving = webui.UiServer("127.0.0.1", port).start_background()
    yield serving
    serving.stop()


@pytest.fixture(scope="session")
def ui_server(ui_serving):
    """The URL of the served page."""
    return f"http://127.0.0.1:{ui_serving.port}"


@pytest.fixture(scope="module")
def browser():
    """Chromium for one test module. Module-scoped on purpose: while Playwright's sync API is
    active an asyncio loop runs on the main thread, and later (non-browser) tests that call
    `asyncio.run` would fail."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture()
def page(browser, ui_server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.serena_errors = []
    pg.on("console", lambda m: pg.serena_errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.serena_errors.append(str(e)))
    pg.goto(ui_server + "/", wait_until="load")
    pg.wait_for_selector("#txt2img_prompt", timeout=60000)
    yield pg
    context.close()


def set_number(page, elem_id: str, value: str) -> None:
    """Type `value` into the number box of the slider/number with `elem_id` and commit it."""
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(value)
    box.press("Enter")


def fill_kept(locator, text: str, tries: int = 20) -> None:
    """Fill `locator` with `text` and make sure it stays: an event still in flight (a dropdown's
    change handler that rewrites this box) may overwrite a value typed too early."""
    for _ in range(tries):
        locator.fill(text)
        kept = True
        for _check in range(3):  # still there after ~1 s: no late handler is going to rewrite it
            locator.page.wait_for_timeout(350)
            kept = kept and locator.input_value() == text
        if kept:
            return
    raise AssertionError(f"the value {text!r} did not stay in {locator}")


def small_txt2img(page, prompt: str, steps: int) -> None:
    """Fill the txt2img tab for a quick job: `prompt`, 64×64, `steps` steps."""
    page.locator("#txt2img_prompt textarea").fill(prompt)
    for elem_id, value in (("txt2img_width", "64"), ("txt2img_height", "64"), ("txt2img_steps", str(steps))):
        set_number(page, elem_id, value)


class RunnerCalls:
    """Records `ProcessingRunner.run` calls (each job's steps, its `p` and what it returned) while
    delegating to the real method."""

    def __init__(self, monkeypatch) -> None:
        from modules.runtime.runner import ProcessingRunner
        self.steps: list[int] = []
        self.jobs: list = []
        self.results: list = []
        original = ProcessingRunner.run

        def recording(runner, request):
            self.steps.append(request.processing.steps)
            self.jobs.append(request.processing)
            result = original(runner, request)
            self.results.append(result)
            return result

        monkeypatch.setattr(ProcessingRunner, "run", recording)


def shot(page, name: str) -> str:
    """Save a full-page screenshot of `page` as test/.artifacts/browser/<name>.png."""
    os.makedirs(ARTIFACTS, exist_ok=True)
    path = os.path.join(ARTIFACTS, f"{name}.png")
    page.screenshot(path=path, full_page=True)
    return path
