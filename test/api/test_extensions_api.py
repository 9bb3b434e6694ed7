"""GET /sdapi/v1/extensions (issue 10, item 1): A1111's fields, read locally from each extension's git
checkout; extensions that are not git checkouts with a remote are not listed (as in A1111)."""
from __future__ import annotations

import os
import subprocess

import pytest

from modules import extensions, paths, shared

REMOTE = "https://example.invalid/someone/sd-webui-gitext.git"


def git(cwd: str, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_DATE": "2024-01-02T03:04:05Z", "GIT_COMMITTER_DATE": "2024-01-02T03:04:05Z",
           "GIT_CONFIG_NOSYSTEM": "1", "HOME": cwd}
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid",
                           "-c", "init.defaultBranch=main", *args],
                          cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture()
def ext_folder(tmp_path, monkeypatch, api_runtime, clean_opts):
    data = str(tmp_path)
    ext = os.path.join(data, "extensions")
    gitext = os.path.join(ext, "sd-webui-gitext")
    os.makedirs(os.path.join(gitext, "scripts"))
    with open(os.path.join(gitext, "scripts", "x.py"), "w") as f:
        f.write("# nothing\n")
    git(gitext, "init", "-q")
    git(gitext, "add", ".")
    git(gitext, "commit", "-q", "-m", "first")
    git(gitext, "remote", "add", "origin", REMOTE)
    os.makedirs(os.path.join(ext, "copied-ext", "scripts"))  # copied in, not a git checkout
    monkeypatch.setattr(shared, "data_paths", paths.data_paths(data, shared.data_paths.models_path))
    yield gitext
    monkeypatch.undo()
    extensions.list_extensions()


def test_extensions_lists_git_checkouts_with_a1111_fields(client, ext_folder, clean_opts):
    res = client.get("/sdapi/v1/extensions")
    assert res.status_code == 200
    items = res.json()
    assert [i["name"] for i in items] == ["sd-webui-gitext"]  # built-ins and copied folders have no remote
    item = items[0]
    assert set(item) == {"name", "remote", "branch", "commit_hash", "commit_date", "version", "enabled"}
    commit = git(ext_folder, "rev-parse", "HEAD")
    assert item == {"name": "sd-webui-gitext", "remote": REMOTE, "branch": "main", "commit_hash": commit,
                    "commit_date": 1704164645, "version": commit[:8], "enabled": True}
    clean_opts.data["disabled_extensions"] = ["sd-webui-gitext"]
    assert client.get("/sdapi/v1/extensions").json()[0]["enabled"] is False
