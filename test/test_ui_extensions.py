"""The Extensions tab's handlers (no browser): install from a local bare git repository, refusals,
update checks, Apply (config.json), the Available list from a local index, and A1111's rule that a
non-local server may not manage extensions."""
from __future__ import annotations

import json
import os
import subprocess
import types

import gradio as gr
import pytest

from modules import extensions, ui_extensions

GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_GLOBAL": os.devnull}


def git(*args, cwd=None):
    return subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True, text=True).stdout


def commit(work: str, name: str, text: str) -> None:
    with open(os.path.join(work, name), "w", encoding="utf8") as f:
        f.write(text)
    git("add", name, cwd=work)
    git("commit", "-q", "-m", f"add {name}", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)


@pytest.fixture()
def remote(tmp_path):
    """A bare repository (the "remote") holding an extension whose install.py writes a marker
    file; returns (file:// URL, work checkout, marker path)."""
    bare, work = tmp_path / "sd-demo-ext.git", tmp_path / "work"
    marker = tmp_path / "installed.txt"
    git("init", "-q", "--bare", "-b", "main", str(bare))
    git("clone", "-q", str(bare), str(work))
    git("checkout", "-q", "-b", "main", cwd=work)
    commit(str(work), "install.py", f"open({str(marker)!r}, 'w').write('ran')\n")
    return bare.as_uri(), str(work), marker


@pytest.fixture()
def ext_root(serena, tmp_path, monkeypatch):
    """A private user-extensions folder and config.json; the extension list is rebuilt after."""
    root = tmp_path / "extensions"
    root.mkdir()
    monkeypatch.setattr(extensions, "_user_dir", lambda: str(root))
    monkeypatch.setattr(serena.cmd_opts, "ui_settings_file", str(tmp_path / "config.json"))
    for name in ("listen", "share", "ngrok", "server_name", "enable_insecure_extension_access"):
        monkeypatch.setattr(serena.cmd_opts, name, None if name in ("ngrok", "server_name") else False)
    saved = (list(serena.opts.disabled_extensions or []), serena.opts.disable_all_extensions)
    yield root
    serena.opts.disabled_extensions, serena.opts.disable_all_extensions = saved
    monkeypatch.undo()
    extensions.list_extensions()


def test_install_from_local_git_url_runs_install_py_and_lists_it(ext_root, remote):
    url, _, marker = remote
    field, table, message = ui_extensions.install_from_url("", url, "")
    assert field == ""
    assert os.path.isdir(ext_root / "sd-demo-ext" / ".git")
    assert marker.read_text() == "ran"
    assert "Installed into" in message and "sd-demo-ext" in message
    assert 'name="enable_sd-demo-ext"' in table and url in table
    assert [e.name for e in extensions.extensions if not e.is_builtin] == ["sd-demo-ext"]


def test_install_refusals_are_short_messages(ext_root, remote, tmp_path):
    url, _, marker = remote
    for bad in ("", "not a url", "-upload-pack=evil", (tmp_path / "missing.git").as_uri()):
        field, _, message = ui_extensions.install_from_url("", bad, "")
        assert 'class="serena-error"' in message and "Traceback" not in message, (bad, message)
        assert field == bad
    assert "git clone failed" in ui_extensions.install_from_url("", (tmp_path / "missing.git").as_uri(), "")[2]
    for escaping in ("../outside", "a/b", "..", ".hidden"):
        message = ui_extensions.install_from_url(escaping, url, "")[2]
        assert "Bad folder name" in message, escaping
    assert not (tmp_path / "outside").exists()
    (ext_root / "taken").mkdir()
    assert "already exists" in ui_extensions.install_from_url("taken", url, "")[2]
    assert not marker.exists()
    assert os.listdir(ext_root) == ["taken"]


def test_check_for_updates_marks_behind_and_apply_saves_disabled(ext_root, remote, serena):
    url, work, _ = remote
    ui_extensions.install_from_url("", url, "")
    table, message = ui_extensions.check_for_updates("[]")
    assert "latest" in table and "all up to date" in message
    commit(work, "README.md", "news\n")
    table, message = ui_extensions.check_for_updates("[]")
    assert "new commits (1 behind)" in table and 'name="update_sd-demo-ext"' in table
    assert "updates for: sd-demo-ext" in message

    reloads = []
    ui_extensions.apply_and_restart('["sd-demo-ext"]', '["sd-demo-ext"]', "extra", reload=lambda: reloads.append(1))
    saved = json.load(open(serena.cmd_opts.ui_settings_file, encoding="utf8"))
    assert saved["disabled_extensions"] == ["sd-demo-ext"] and saved["disable_all_extensions"] == "extra"
    assert reloads == [1]
    assert os.path.isfile(ext_root / "sd-demo-ext" / "README.md")  # updated to the remote's commit
    extensions.list_extensions()
    assert [e.enabled for e in extensions.extensions if e.name == "sd-demo-ext"] == [False]


def test_available_list_from_local_index(ext_root, remote, tmp_path):
    url, _, _ = remote
    ui_extensions.install_from_url("", url, "")
    index = {"tags": {"script": "a script"}, "extensions": [
        {"name": "Demo ext", "url": url, "description": "the demo", "tags": ["script"], "added": "2024-01-01"},
        {"name": "Other <b>", "url": "https://example.invalid/other.git", "description": "x", "tags": []}]}
    path = tmp_path / "index.json"
    path.write_text(json.dumps(index))
    for where in (str(path), path.as_uri()):
        table, message = ui_extensions.load_available(where)
        assert "Loaded 2 extension(s)" in message
        assert table.count("<tr>") == 3 and "Other &lt;b&gt;" in table
        assert "installed" in table and table.count(" disabled>Installed</button>") == 1
        assert 'data-ext-url="https://example.invalid/other.git">Install</button>' in table
    table, message = ui_extensions.load_available(str(tmp_path / "nowhere.json"))
    assert table == "" and "Could not load the extension index" in message and "Traceback" not in message
    (tmp_path / "bad.json").write_text("{not json")
    assert "is not JSON" in ui_extensions.load_available(str(tmp_path / "bad.json"))[1]


def test_non_local_server_is_refused(ext_root, remote, serena, monkeypatch):
    url, _, marker = remote
    monkeypatch.setattr(serena.cmd_opts, "listen", True)
    message = ui_extensions.install_from_url("", url, "")[2]
    assert "--listen" in message and "--enable-insecure-extension-access" in message
    assert not marker.exists() and os.listdir(ext_root) == []
    assert "disabled because of command line flags" in ui_extensions.load_available("x")[1]
    with pytest.raises(gr.Error):
        ui_extensions.apply_and_restart("[]", "[]", "none", reload=lambda: None)
    monkeypatch.setattr(serena.cmd_opts, "enable_insecure_extension_access", True)
    assert "Installed into" in ui_extensions.install_from_url("", url, "")[2]


def test_access_rule_flags():
    flags = types.SimpleNamespace(listen=False, share=False, ngrok=None, server_name=None,
                                  enable_insecure_extension_access=False)
    assert extensions.access_refused(flags) is None
    for name, value in (("share", True), ("ngrok", "token"), ("server_name", "0.0.0.0")):
        refused = extensions.access_refused(types.SimpleNamespace(**{**vars(flags), name: value}))
        assert refused and f"--{name.replace('_', '-')}" in refused
