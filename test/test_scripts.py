"""The script surface: Script, ScriptRunner dispatch and argument slices, load_scripts, callbacks."""
from __future__ import annotations

import textwrap
from types import SimpleNamespace

import pytest

from modules import script_callbacks, scripts


class Recorder(scripts.Script):
    def __init__(self):
        self.calls = []

    def title(self):
        return "Recorder"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        self.calls.append(("process", args))

    def before_process_batch(self, p, *args, **kwargs):
        self.calls.append(("before_process_batch", args, kwargs["batch_number"]))

    def postprocess_image(self, p, pp, *args):
        pp.image = f"{pp.image}+recorded"


class Broken(scripts.Script):
    def title(self):
        return "Broken"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        raise RuntimeError("boom")


class Selectable(scripts.Script):
    def title(self):
        return "My Script"

    def run(self, p, *args):
        return ("ran", args)


def make_runner():
    runner = scripts.ScriptRunner()
    broken, recorder, selectable = Broken(), Recorder(), Selectable()
    runner.add_script(broken, n_args=0)
    runner.add_script(recorder, n_args=2)
    runner.add_script(selectable, n_args=1)
    return runner, recorder, selectable


def test_runner_lists_and_slices():
    runner, recorder, selectable = make_runner()
    assert runner.alwayson_scripts[1] is recorder and runner.selectable_scripts == [selectable]
    assert runner.titles == ["My Script"] and runner.script("my script") is selectable
    assert (recorder.args_from, recorder.args_to) == (1, 3)
    assert (selectable.args_from, selectable.args_to) == (3, 4)
    assert recorder.alwayson and recorder.name == "recorder"


def test_hooks_get_own_args_and_failures_do_not_stop_others():
    runner, recorder, _ = make_runner()
    p = SimpleNamespace(script_args=[0, "a", "b", "c"])
    runner.process(p)
    runner.before_process_batch(p, batch_number=3, prompts=[], seeds=[], subseeds=[])
    assert recorder.calls == [("process", ("a", "b")), ("before_process_batch", ("a", "b"), 3)]


def test_only_overridden_hooks_run_and_args_objects_pass_through():
    runner, _, _ = make_runner()
    pp = scripts.PostprocessImageArgs("img")
    runner.postprocess_image(SimpleNamespace(script_args=[0, 1, 2, 3]), pp)
    assert pp.image == "img+recorded"
    assert scripts.overrides(Recorder(), "process") and not scripts.overrides(Recorder(), "postprocess")


def test_run_selects_by_index():
    runner, _, _ = make_runner()
    assert runner.run(SimpleNamespace(), 1, "x", "y", "z") == ("ran", ("z",))
    assert runner.run(SimpleNamespace(), 0) is None
    with pytest.raises(IndexError, match="5"):
        runner.run(SimpleNamespace(), 5)


def test_mask_blend_args_final_flag():
    assert scripts.MaskBlendArgs(1, 2, 3, 4, 5).is_final_blend
    assert not scripts.MaskBlendArgs(1, 2, 3, 4, 5, denoiser=object(), sigma=1.0).is_final_blend


def test_load_scripts_registers_subclasses(tmp_path):
    folder = tmp_path / "ext" / "scripts"
    folder.mkdir(parents=True)
    (folder / "hello.py").write_text(textwrap.dedent("""
        from modules import scripts

        class Hello(scripts.Script):
            def title(self):
                return "Hello"

            def show(self, is_img2img):
                return not is_img2img
    """))
    (folder / "bad.py").write_text("raise ImportError('broken script')\n")
    try:
        found = scripts.load_scripts([str(tmp_path / "ext")])
        assert [d.script_class.__name__ for d in found] == ["Hello"]
        assert scripts.scripts_txt2img.titles == ["Hello"]
        assert scripts.scripts_img2img.titles == []
    finally:
        scripts.load_scripts()  # back to the install's own scripts (built-ins, postprocessing ones)


def test_callbacks_register_fire_and_remove():
    seen = []

    def on_denoiser(params):
        seen.append(params.sampling_step)

    def failing(params):
        raise RuntimeError("extension bug")

    script_callbacks.on_cfg_denoiser(failing)
    script_callbacks.on_cfg_denoiser(on_denoiser, name="mine")
    try:
        params = script_callbacks.CFGDenoiserParams(None, None, None, 4, 10, None, None)
        script_callbacks.cfg_denoiser_callback(params)
        assert seen == [4]
        names = [c.name for c in script_callbacks.callback_map["callbacks_cfg_denoiser"]]
        assert names == ["base/test_scripts.py/cfg_denoiser", "base/test_scripts.py/cfg_denoiser/mine"]  # A1111 naming
        script_callbacks.remove_current_script_callbacks()
        assert script_callbacks.callback_map["callbacks_cfg_denoiser"] == []
    finally:
        script_callbacks.remove_callbacks_for_function(failing)
        script_callbacks.remove_callbacks_for_function(on_denoiser)


def test_list_callbacks_collect():
    script_callbacks.on_list_unets(lambda found: found.append("unet-a"))
    try:
        assert script_callbacks.list_unets_callback() == ["unet-a"]
    finally:
        script_callbacks.remove_current_script_callbacks()


def test_unknown_hook_rejected():
    with pytest.raises(ValueError, match="nope"):
        script_callbacks.add_callback("nope", print)


FIRE_ARGS = {
    "app_started": (None, "app"), "before_reload": (), "model_loaded": ("model",), "ui_tabs": (),
    "ui_train_tabs": (script_callbacks.UiTrainTabParams(None),), "ui_settings": (),
    "before_image_saved": (script_callbacks.ImageSaveParams(None, None, "f.png", {}),),
    "image_saved": (script_callbacks.ImageSaveParams(None, None, "f.png", {}),),
    "extra_noise": (script_callbacks.ExtraNoiseParams(1, 2, 3),),
    "cfg_denoiser": (script_callbacks.CFGDenoiserParams(1, 2, 3, 4, 5, 6, 7),),
    "cfg_denoised": (script_callbacks.CFGDenoisedParams(1, 2, 3, 4),),
    "cfg_after_cfg": (script_callbacks.AfterCFGCallbackParams(1, 2, 3),),
    "image_grid": (script_callbacks.ImageGridLoopParams([], 1, 1),), "infotext_pasted": ("text", {}),
    "script_unloaded": (), "before_ui": (), "list_optimizers": (), "list_unets": (),
    "before_token_counter": (script_callbacks.BeforeTokenCounterParams("p", 20, []),),
}


@pytest.mark.parametrize("hook", sorted(FIRE_ARGS))
def test_every_hook_registers_and_fires(hook):
    seen = []

    def callback(*args):
        seen.append(args)
        return [("tab", "Title", "id")] if hook == "ui_tabs" else None

    getattr(script_callbacks, f"on_{hook}")(callback)
    try:
        result = getattr(script_callbacks, f"{hook}_callback")(*FIRE_ARGS[hook])
        if hook in ("list_optimizers", "list_unets"):
            assert seen == [([],)] and result == []
        else:
            assert seen == [FIRE_ARGS[hook]]
        if hook == "ui_tabs":
            assert result == [("tab", "Title", "id")]
    finally:
        script_callbacks.remove_callbacks_for_function(callback)


@pytest.mark.parametrize("hook", ["before_component", "after_component"])
def test_component_hooks_pass_kwargs(hook):
    seen = []
    getattr(script_callbacks, f"on_{hook}")(lambda component, **kw: seen.append((component, kw)))
    getattr(script_callbacks, f"on_{hook}")(lambda component, **kw: 1 / 0)
    try:
        getattr(script_callbacks, f"{hook}_callback")("button", elem_id="x")
        assert seen == [("button", {"elem_id": "x"})]
    finally:
        script_callbacks.remove_current_script_callbacks()


def test_script_helpers():
    script = Selectable()
    script.on_before_component(print, elem_id="a")
    script.on_after_component(print, elem_id="b")
    assert script.on_before_component_elem_id == [("a", print)] and script.on_after_component_elem_id == [("b", print)]
    assert script.elem_id("steps") == "script_txt2img_my_script_steps"
    assert script.describe() == "" and script.ui(False) == [] and Selectable().show(False) is True
    with pytest.raises(NotImplementedError):
        scripts.Script().title()


def test_set_named_arg_and_setup_runs_once():
    class Control:
        def __init__(self, elem_id, value):
            self.elem_id, self.value = elem_id, value

    class WithSetup(scripts.Script):
        setups = 0

        def title(self):
            return "With Setup"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def setup(self, p, *args):
            WithSetup.setups += 1
            p.seen_args = args

    runner = scripts.ScriptRunner()
    runner.add_script(WithSetup(), controls=[Control("script_strength", 0.5)])
    assert runner.inputs[1].value == 0.5
    args = runner.set_named_arg([0, 0.5], "with setup", "strength", 0.9)
    assert args == [0, 0.9]
    from modules import processing
    p = processing.StableDiffusionProcessingTxt2Img(prompt="x")
    p.scripts = runner
    p.script_args = args
    p.script_args = args
    assert WithSetup.setups == 1 and p.seen_args == (0.9,)
    with pytest.raises(RuntimeError, match="nope"):
        runner.set_named_arg(args, "with setup", "nope", 1)


def test_elem_id_is_a1111s_script_tab_title_item():
    class ImgOnly(scripts.Script):
        def title(self):
            return "SD upscale (2x), v1.0"

        def show(self, is_img2img):
            return is_img2img

    class Always(scripts.Script):
        def title(self):
            return "Extra Options"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

    only = ImgOnly()
    only.is_img2img = True
    assert only.elem_id("scale") == "script_sd_upscale_2x_v10_scale", "one tab only: no tab name; punctuation dropped"
    always = Always()
    always.is_img2img = True
    assert always.elem_id("x") == "script_img2img_extra_options_x"
