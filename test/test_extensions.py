"""Extension discovery and lifecycle (issue 10, item 1): small A1111-style extensions written here,
in A1111's layout, installed into a temporary data folder's `extensions/`.

Covered: discovery (built-ins first, sorted), metadata.ini ordering and requirements, preload flags,
install.py once per change (and a failing one disabling its extension), a script that raises on
import, the disable options and flags, and an extension's AlwaysVisible script in a real job.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import textwrap

import pytest

from modules import cmd_args, extensions, options, paths, script_callbacks, scripts, shared
from test_processing_helpers import env  # noqa: F401  (module-scoped model, for the job test)

HELPERS = ("alpha_helper",)

ALPHA_SCRIPT = """
    import alpha_helper  # a sibling module, imported by bare name
    from modules import script_callbacks, scripts

    HERE = scripts.basedir()
    script_callbacks.on_before_ui(lambda: None, name="alpha before ui")

    class AlphaScript(scripts.Script):
        def __init__(self):
            self.calls = []

        def title(self):
            return alpha_helper.TITLE

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def process(self, p, *args):
            self.calls.append("process")

        def before_process_batch(self, p, *args, **kwargs):
            self.calls.append("before_process_batch")

        def postprocess_image(self, p, pp, *args):
            self.calls.append("postprocess_image")

        def postprocess(self, p, processed, *args):
            self.calls.append("postprocess")
"""

ZED_SCRIPT = """
    from modules import scripts

    class ZedScript(scripts.Script):
        def title(self):
            return "Zed"
"""

INSTALL = """
    import os
    import launch  # A1111's launcher helpers, importable from the webui root
    assert launch.is_installed("pip")
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "installed.txt"), "a") as f:
        f.write("ran\\n")
"""


def write(path, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf8") as f:
        f.write(textwrap.dedent(text).lstrip())


def make_extensions(root) -> None:
    ext = os.path.join(root, "extensions")
    # alpha: a script importing a sibling helper; loads after z-ext; requires one that is missing
    write(os.path.join(ext, "a-alpha", "alpha_helper.py"), "TITLE = 'Alpha'\n")
    write(os.path.join(ext, "a-alpha", "scripts", "alpha.py"), ALPHA_SCRIPT)
    write(os.path.join(ext, "a-alpha", "metadata.ini"), """
        [Extension]
        Name = Alpha
        Requires = missing-ext

        [scripts]
        After = z-ext
    """)
    write(os.path.join(ext, "a-alpha", "javascript", "alpha.js"), "console.log('alpha');\n")
    write(os.path.join(ext, "a-alpha", "javascript", "notes.txt"), "not js\n")
    write(os.path.join(ext, "a-alpha", "style.css"), "body {}\n")
    write(os.path.join(ext, "a-alpha", "localizations", "xx_XX.json"), "{}\n")
    # z-ext: a preload flag, an install.py that leaves a marker
    write(os.path.join(ext, "z-ext", "scripts", "zed.py"), ZED_SCRIPT)
    write(os.path.join(ext, "z-ext", "preload.py"), """
        def preload(parser):
            parser.add_argument("--wildcards-dir", type=str, default=None, help="wildcards")
    """)
    write(os.path.join(ext, "z-ext", "install.py"), INSTALL)
    # broken: a script that raises on import
    write(os.path.join(ext, "m-broken", "scripts", "broken.py"), "raise ZeroDivisionError('broken on import')\n")
    write(os.path.join(ext, "m-broken", "preload.py"), "def preload(parser):\n    raise RuntimeError('bad preload')\n")
    # bad-install: install.py fails, so its script must not load this run
    write(os.path.join(ext, "b-badinstall", "install.py"), """
        import sys
        print("cannot install the-package")
        sys.exit(3)
    """)
    write(os.path.join(ext, "b-badinstall", "scripts", "bad.py"), ZED_SCRIPT.replace("Zed", "Bad"))


@pytest.fixture()
def ext_data(tmp_path, monkeypatch):
    """A data folder holding the test extensions; shared paths/options/flags pointed at it."""
    data = str(tmp_path / "data")
    make_extensions(data)
    monkeypatch.setattr(shared, "data_paths", paths.data_paths(data))
    monkeypatch.setattr(shared, "opts", options.Options())
    monkeypatch.setattr(shared, "cmd_opts", cmd_args.parse(["--data-dir", data], environ={}))
    saved = (list(scripts.scripts_data), scripts.scripts_txt2img, scripts.scripts_img2img)
    yield data
    for name in HELPERS:
        sys.modules.pop(name, None)
    scripts.scripts_data[:] = saved[0]
    scripts.scripts_txt2img, scripts.scripts_img2img = saved[1], saved[2]
    extensions.failed_installs.clear()
    monkeypatch.undo()
    extensions.list_extensions()  # back to the install's own extensions
    for callbacks in script_callbacks.callback_map.values():
        callbacks[:] = [c for c in callbacks if not c.script.startswith(data)]


def load():
    import webui
    webui.load_extensions()


def titles() -> list[str]:
    return [d.script_class.__name__ for d in scripts.scripts_data]


def test_discovery_metadata_and_order(ext_data, caplog):
    with caplog.at_level(logging.ERROR):
        extensions.list_extensions()
    names = [e.name for e in extensions.extensions]
    builtins = sorted(os.listdir(os.path.join(paths.script_path, "extensions-builtin")))
    assert names == builtins + ["a-alpha", "b-badinstall", "m-broken", "z-ext"]
    assert all(e.is_builtin for e in extensions.extensions[:len(builtins)])
    alpha = extensions.extensions[len(builtins)]
    assert alpha.canonical_name == "alpha" and alpha.metadata.requires == ["missing-ext"]
    assert alpha.enabled and not alpha.is_builtin and alpha.path == os.path.join(ext_data, "extensions", "a-alpha")
    assert 'Extension "a-alpha" requires "missing-ext" which is not installed.' in caplog.text
    assert [f.filename for f in alpha.list_files("javascript", ".js")] == ["alpha.js"]
    assert [f.filename for f in alpha.list_files("localizations", ".json")] == ["xx_XX.json"]
    assert os.path.isfile(os.path.join(alpha.path, "style.css"))
    assert alpha.remote is None and alpha.version == ""  # not a git checkout
    order = [os.path.basename(f.path) for f in scripts.list_scripts("scripts", ".py")]
    # folder order, except that alpha's scripts wait for z-ext's ([scripts] After = z-ext): A1111's
    # depth-first sort puts z-ext's script right before alpha's
    assert order[-4:] == ["zed.py", "alpha.py", "bad.py", "broken.py"]
    assert extensions.find_extension(os.path.join(alpha.path, "scripts", "alpha.py")) is alpha


def test_before_puts_a_script_ahead(ext_data):
    write(os.path.join(ext_data, "extensions", "z-ext", "metadata.ini"), "[scripts/zed.py]\nBefore = b-badinstall\n")
    extensions.list_extensions()
    order = [os.path.basename(f.path) for f in scripts.list_scripts("scripts", ".py")]
    assert order.index("zed.py") < order.index("bad.py")


def test_preload_adds_flags_and_a_failing_preload_is_reported(ext_data, caplog):
    with caplog.at_level(logging.ERROR):
        opts = cmd_args.parse(["--data-dir", ext_data, "--wildcards-dir", "/w"], environ={})
    assert opts.wildcards_dir == "/w"
    assert "Error running preload() for" in caplog.text and "bad preload" in caplog.text
    # a disabled extension's preload does not run, so its flag is unknown
    with open(os.path.join(ext_data, "config.json"), "w") as f:
        json.dump({"disabled_extensions": ["z-ext"]}, f)
    assert "wildcards_dir" not in vars(cmd_args.parse(["--data-dir", ext_data], environ={}))
    with pytest.raises(SystemExit):
        cmd_args.parse(["--data-dir", ext_data, "--wildcards-dir", "/w"], environ={})
    assert "wildcards_dir" not in vars(cmd_args.parse(["--data-dir", ext_data, "--disable-extra-extensions"],
                                                      environ={}))


def test_install_runs_once_per_change_and_a_failing_one_disables(ext_data, caplog):
    marker = os.path.join(ext_data, "extensions", "z-ext", "installed.txt")
    with caplog.at_level(logging.ERROR):
        load()
    assert open(marker).read() == "ran\n"
    assert "cannot install the-package" in caplog.text and "b-badinstall" in caplog.text
    bad = os.path.join(ext_data, "extensions", "b-badinstall")
    assert "cannot install the-package" in extensions.failed_installs[bad]
    assert "b-badinstall" not in [e.name for e in extensions.active()]
    assert "ZedScript" in titles() and "BadScript" not in titles()
    load()  # nothing changed: z-ext's installer does not run again; the failed one is retried
    assert open(marker).read() == "ran\n" and bad in extensions.failed_installs
    with open(os.path.join(ext_data, "extensions", "z-ext", "install.py"), "a") as f:
        f.write("# changed\n")
    load()
    assert open(marker).read() == "ran\nran\n"
    shared.cmd_opts.skip_install = True  # --skip-install: nothing runs, nothing is held back
    os.remove(marker)
    with open(os.path.join(ext_data, "extensions", "z-ext", "install.py"), "a") as f:
        f.write("# changed again\n")
    load()
    assert not os.path.exists(marker) and "BadScript" in titles()


def test_broken_script_is_reported_and_the_others_load(ext_data, caplog):
    with caplog.at_level(logging.ERROR):
        load()
    assert "Error loading script:" in caplog.text and "broken.py" in caplog.text
    assert "Traceback" in caplog.text and "ZeroDivisionError: broken on import" in caplog.text
    assert {"AlphaScript", "ZedScript"} <= set(titles())
    alpha = next(d for d in scripts.scripts_data if d.script_class.__name__ == "AlphaScript")
    assert alpha.basedir == os.path.join(ext_data, "extensions", "a-alpha") and alpha.module.HERE == alpha.basedir
    assert alpha.basedir not in sys.path  # only while its scripts load
    assert [s.title() for s in scripts.scripts_txt2img.alwayson_scripts if s.title() == "Alpha"] == ["Alpha"]
    assert "Zed" in scripts.scripts_txt2img.titles
    load()  # a reload replaces the callbacks the extension's script registered, it does not add more
    names = [c.name for c in script_callbacks.callback_map["callbacks_before_ui"]]
    assert names == ["alpha/alpha.py/before_ui/alpha before ui"]  # A1111 naming: <ext>/<file>/<hook>/<name>


def test_disabled_extensions_and_disable_flags(ext_data):
    shared.cmd_opts.skip_install = True
    shared.opts.data["disabled_extensions"] = ["a-alpha"]
    load()
    assert "AlphaScript" not in titles() and "ZedScript" in titles()
    assert not next(e for e in extensions.extensions if e.name == "a-alpha").enabled
    shared.opts.data["disabled_extensions"] = []
    for flag in ("disable_all_extensions", "disable_extra_extensions"):
        setattr(shared.cmd_opts, flag, True)
        load()
        assert "AlphaScript" not in titles() and "ZedScript" not in titles()
        assert all(e.is_builtin for e in extensions.active())
        setattr(shared.cmd_opts, flag, False)
    shared.opts.data["disable_all_extensions"] = "extra"
    load()
    assert [e for e in extensions.active() if not e.is_builtin] == []
    shared.opts.data["disable_all_extensions"] = "all"
    assert extensions.active() == []
    shared.opts.data["disable_all_extensions"] = "none"
    load()
    assert "AlphaScript" in titles()


def test_extension_script_hooks_run_in_a_real_job(env, ext_data):  # noqa: F811
    from modules import processing
    shared.cmd_opts.skip_install = True
    load()
    alpha = next(s for s in scripts.scripts_txt2img.alwayson_scripts if s.title() == "Alpha")
    p = processing.StableDiffusionProcessingTxt2Img(
        prompt="a red cube", seed=1, steps=2, width=64, height=64, sampler_name="Euler",
        do_not_save_samples=True, do_not_save_grid=True)
    p.scripts = scripts.scripts_txt2img
    p.script_args = [0]
    shared.state.begin("test")
    try:
        processed = processing.process_images(p)
    finally:
        shared.state.end()
        shared.state.reset()
    assert len(processed.images) == 1
    assert alpha.calls == ["process", "before_process_batch", "postprocess_image", "postprocess"]


ORDER_SCRIPT = """
    from modules import script_callbacks, scripts

    RAN = []
    script_callbacks.on_model_loaded(lambda m: RAN.append("{name}"), name="mark")

    class {cls}(scripts.Script):
        def title(self):
            return "{cls}"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def process(self, p, *args):
            p.order.append("{name}")
"""


def _order_extensions(data: str, metadata: str = "") -> None:
    for ext, name, cls in (("c-first", "first", "FirstScript"), ("d-second", "second", "SecondScript")):
        write(os.path.join(data, "extensions", ext, "scripts", f"{name}.py"),
              ORDER_SCRIPT.replace("{name}", name).replace("{cls}", cls))
    if metadata:
        write(os.path.join(data, "extensions", "d-second", "metadata.ini"), metadata)
    shared.cmd_opts.skip_install = True


def _callback_order() -> list[str]:
    ran: list[str] = []
    for entry in script_callbacks.ordered_callbacks("model_loaded"):
        if entry.name.endswith("/mark"):
            ran.append(entry.name.split("/")[0])
    return ran


def _script_order() -> list[str]:
    from types import SimpleNamespace
    p = SimpleNamespace(order=[], script_args=[0])
    scripts.scripts_txt2img.process(p)
    return p.order


def test_callbacks_and_script_hooks_follow_load_order_by_default(ext_data):
    _order_extensions(ext_data)
    load()
    assert _callback_order() == ["c-first", "d-second"]
    assert _script_order() == ["first", "second"]


def test_metadata_callback_rules_reorder_callbacks_and_script_hooks(ext_data):
    # A1111 names: <extension>/<file>/<hook>[/<name>]; script hooks are script_<hook>/<class>
    _order_extensions(ext_data, """
        [callbacks/d-second/second.py/model_loaded/mark]
        Before = c-first/first.py/model_loaded/mark

        [callbacks/d-second/second.py/script_process/SecondScript]
        Before = c-first/first.py/script_process/FirstScript
    """)
    load()
    assert _callback_order() == ["d-second", "c-first"]
    assert _script_order() == ["second", "first"]


def test_user_priority_options_put_named_callbacks_first(ext_data):
    _order_extensions(ext_data)
    load()
    assert "prioritized_callbacks_model_loaded" in shared.opts.data_labels  # the "Callbacks" settings
    assert "prioritized_callbacks_script_process" in shared.opts.data_labels
    shared.opts.data["prioritized_callbacks_model_loaded"] = ["d-second/second.py/model_loaded/mark"]
    shared.opts.data["prioritized_callbacks_script_process"] = ["d-second/second.py/script_process/SecondScript"]
    assert _callback_order() == ["d-second", "c-first"]
    assert _script_order() == ["second", "first"]
