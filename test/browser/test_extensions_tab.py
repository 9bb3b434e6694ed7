"""The Extensions tab in a real browser (issue 11): an extension installed from a local git URL
appears in the Installed table after "Apply and restart UI" — the server rebuilt the page, so the
new script's control is in it — and its script is served by the API."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request

from conftest import shot

EXT_NAME = "serena-browser-probe"
SCRIPT = '''from modules import scripts


class BrowserProbe(scripts.Script):
    def title(self):
        return "Browser probe"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        import gradio as gr
        return [gr.Checkbox(False, label="Browser probe enabled", elem_id=self.elem_id("probe"))]
'''
GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_GLOBAL": os.devnull}


def make_remote(tmp_path) -> str:
    """A bare repository holding an extension with one control-less AlwaysVisible script."""
    bare, work = tmp_path / f"{EXT_NAME}.git", tmp_path / "work"
    run = lambda *a, cwd=None: subprocess.run(["git", *a], cwd=cwd, env=GIT_ENV, check=True, capture_output=True)
    run("init", "-q", "--bare", "-b", "main", str(bare))
    run("init", "-q", "-b", "main", str(work))
    (work / "scripts").mkdir()
    (work / "scripts" / "browser_probe.py").write_text(SCRIPT)
    run("add", ".", cwd=work)
    run("commit", "-q", "-m", "probe", cwd=work)
    run("push", "-q", str(bare), "main", cwd=work)
    return bare.as_uri()


def test_install_from_url_then_apply_and_restart(page, ui_server, ui_serving, serena, tmp_path):
    import time

    from modules import extensions, shared
    url = make_remote(tmp_path)
    target = os.path.join(extensions._user_dir(), EXT_NAME)
    try:
        page.get_by_role("tab", name="Extensions", exact=True).click()
        page.get_by_role("tab", name="Install from URL", exact=True).click()
        page.locator("#extensions_install_url textarea, #extensions_install_url input").first.fill(url)
        page.locator("#extensions_install_button").click()
        page.wait_for_function("document.querySelector('#extension_install_result')?.innerText.includes('Installed into')",
                               timeout=30000)
        assert os.path.isdir(os.path.join(target, ".git"))

        page.get_by_role("tab", name="Installed", exact=True).click()
        restarts = ui_serving.restarts
        with page.expect_navigation(timeout=90000):
            page.locator("#extensions_apply").click()  # the page reloads once the rebuilt app answers
        page.wait_for_selector("#txt2img_prompt", timeout=60000)
        assert ui_serving.restarts == restarts + 1
        page.serena_errors.clear()  # refused connections while the server was down are expected
        # the new script's control is in the rebuilt page (A1111's restart), not only in the API
        assert page.get_by_label("Browser probe enabled").first.is_visible()
        page.get_by_role("tab", name="Extensions", exact=True).click()
        row = page.locator("#extensions tr", has_text=EXT_NAME)
        row.wait_for(timeout=30000)
        assert row.locator(f'input[name="enable_{EXT_NAME}"]').is_checked()
        assert url in row.inner_text()
        shot(page, "extensions-installed")
        with urllib.request.urlopen(ui_server + "/sdapi/v1/scripts") as response:
            listed = json.load(response)
        assert "browser probe" in [x.lower() for x in listed["txt2img"]]
        assert page.serena_errors == []
    finally:
        shutil.rmtree(target, ignore_errors=True)
        restarts = ui_serving.restarts  # rebuild without it: the session's other tests see the usual page
        shared.state.request_restart()
        deadline = time.monotonic() + 90
        while ui_serving.restarts == restarts and time.monotonic() < deadline:
            time.sleep(0.1)
