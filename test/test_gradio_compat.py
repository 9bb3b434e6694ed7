"""Gradio 3 extension UIs on Gradio 6 (`modules.gradio_extensions`).

Each UI here is written the way A1111 extensions write theirs for Gradio 3.41 (`gr.Box`,
`.style(...)`, `Cls.update(...)`, `_js=`, `source=`/`tool=` on images, `gr.Variable`, float
`scale`); the tests check what the browser would get (the Blocks config), that handlers run
through Gradio's own request processing, and that A1111's before/after component hooks fire.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import gradio as gr
import pytest
from gradio.state_holder import SessionState

from modules import gradio_extensions, script_callbacks, scripts


@pytest.fixture(autouse=True)
def installed():
    gradio_extensions.install()
    yield


@pytest.fixture()
def component_callbacks():
    """Leave script_callbacks' component hooks and `scripts.scripts_current` as they were."""
    keys = ("callbacks_before_component", "callbacks_after_component")
    saved = {key: list(script_callbacks.callback_map[key]) for key in keys}
    runner = scripts.scripts_current
    yield
    for key in keys:
        script_callbacks.callback_map[key][:] = saved[key]
    scripts.scripts_current = runner


def config_by_elem_id(blocks: gr.Blocks) -> dict[str, dict]:
    """The browser's view of each component with an elem_id: its props in `blocks.config`."""
    return {c["props"]["elem_id"]: c for c in blocks.config["components"] if c.get("props", {}).get("elem_id")}


def dependency_of(blocks: gr.Blocks, fn: Any) -> int:
    """The index of the event whose Python function is `fn`."""
    return next(i for i, block_fn in blocks.fns.items() if block_fn.fn is fn)


def run_event(blocks: gr.Blocks, fn: Any, inputs: list, state: SessionState | None = None) -> list:
    """Run the event of `fn` as a browser request would (preprocess, call, postprocess)."""
    state = state or SessionState(blocks)
    result = asyncio.run(blocks.process_api(block_fn=dependency_of(blocks, fn), inputs=inputs, state=state))
    return result["data"]


def build_extension_ui():
    """A small extension tab, written exactly as a Gradio 3.41 A1111 extension writes it."""
    handlers: dict[str, Any] = {}
    with gr.Blocks(analytics_enabled=False) as ui:
        with gr.Box(elem_id="ext_box"):
            with gr.Row().style(equal_height=True):
                with gr.Column(scale=0.5, elem_id="ext_left"):
                    image = gr.Image(source="upload", tool="sketch", type="pil", shape=(64, 64), brush_radius=8,
                                     mirror_webcam=False, elem_id="ext_image")
                with gr.Column(scale=2.0):
                    mode = gr.Dropdown(label="Mode", choices=["fast", "slow"], value="turbo", elem_id="ext_mode")
                    run = gr.Button("Run", variant="primary", elem_id="ext_run",
                                    tooltip="Run the extension").style(full_width=False, size="sm")
                    notes = gr.Textbox(label="Notes", elem_id="ext_notes").style(show_copy_button=True, container=False)
            gallery = gr.Gallery(label="Results", elem_id="ext_gallery").style(grid=4, height="auto", preview=True)
        memory = gr.Variable(value={"runs": 0})

        def on_run(selected: str, text: str):
            return (gr.Button.update(value="Again", visible=True),
                    gr.Dropdown.update(choices=["fast", "slow", "new"], value="new"),
                    gr.Textbox.update(value=f"{selected}:{text}", lines=3),
                    gr.update(source="webcam"))

        def on_mode(selected: str):
            return selected.upper()

        handlers.update(on_run=on_run, on_mode=on_mode)
        run.click(fn=on_run, inputs=[mode, notes], outputs=[run, mode, notes, image],
                  _js="(mode, notes) => [mode, notes]", show_progress=False, status_tracker=None,
                  ).then(fn=None, _js="() => 'then'", every=None)
        mode.change(on_mode, inputs=[mode], outputs=[notes], _preprocess=True, api_name=False)
        image.edit(fn=None, _js="() => 'edited'")  # Gradio 3's Image.edit: Gradio 6's change
        ui.load(fn=None, _js="() => { window.extLoaded = true; }")
    parts = dict(image=image, mode=mode, run=run, notes=notes, gallery=gallery, memory=memory)
    return ui, parts, handlers


# --- building ------------------------------------------------------------------------------------------------
def test_extension_ui_builds_with_gradio3_idioms():
    ui, parts, _ = build_extension_ui()
    by_id = config_by_elem_id(ui)
    assert {"ext_box", "ext_image", "ext_mode", "ext_run", "ext_notes", "ext_gallery"} <= set(by_id)
    assert by_id["ext_box"]["type"] == "group"                      # gr.Box → a Group
    assert by_id["ext_image"]["props"]["sources"] == ["upload"]     # source="upload"
    assert by_id["ext_mode"]["props"]["allow_custom_value"] is True  # value not among the choices
    assert by_id["ext_image"]["props"]["webcam_options"]["mirror"] is False
    assert by_id["ext_left"]["props"]["scale"] == 1                 # float scale → int
    assert by_id["ext_gallery"]["props"]["columns"] == 4            # .style(grid=4)
    assert by_id["ext_gallery"]["props"]["preview"] is True
    assert by_id["ext_run"]["props"]["size"] == "sm" and by_id["ext_run"]["props"]["scale"] == 0
    assert by_id["ext_notes"]["props"]["buttons"] == ["copy"] and by_id["ext_notes"]["props"]["container"] is False
    assert isinstance(parts["memory"], gr.State) and parts["memory"].value == {"runs": 0}
    assert parts["run"].webui_tooltip == "Run the extension"
    assert "gradio-button" in parts["run"].elem_classes          # A1111's CSS class hook


def test_events_register_with_their_js():
    ui, parts, handlers = build_extension_ui()
    deps = ui.config["dependencies"]
    js = {d["js"] for d in deps if d.get("js")}
    assert js == {"(mode, notes) => [mode, notes]", "() => 'then'", "() => 'edited'",
                  "() => { window.extLoaded = true; }"}
    edited = next(d for d in deps if d.get("js") == "() => 'edited'")
    assert [tuple(t) for t in edited["targets"]] == [(parts["image"]._id, "change")]
    click = ui.fns[dependency_of(ui, handlers["on_run"])]
    assert [b._id for b in click.inputs] == [parts["mode"]._id, parts["notes"]._id]
    assert click.show_progress == "hidden"
    change = ui.fns[dependency_of(ui, handlers["on_mode"])]
    assert change.api_visibility == "private"                     # api_name=False


def test_update_classmethods_return_translated_update_dicts():
    assert gr.Button.update(value="Go", visible=False) == {"__type__": "update", "value": "Go", "visible": False}
    assert gr.Textbox.update("text") == {"__type__": "update", "value": "text"}
    assert gr.Dropdown.update(choices=["a", "b"]) == {"__type__": "update", "choices": ["a", "b"]}
    assert gr.Image.update(source="webcam") == {"__type__": "update", "sources": ["webcam"]}
    assert gr.Slider.update(maximum=10) == {"__type__": "update", "maximum": 10}
    assert gr.Dropdown.update(choices=["a"], value="z") == {"__type__": "update", "choices": ["a"], "value": "z",
                                                            "allow_custom_value": True}
    for layout in (gr.Row, gr.Column, gr.Group, gr.Accordion, gr.Tab, gr.Box):
        assert layout.update(visible=False) == {"__type__": "update", "visible": False}
    assert gr.Row.update(False) == {"__type__": "update", "visible": False}
    for cls in (gr.Checkbox, gr.Gallery, gr.Radio, gr.Number, gr.HTML, gr.File, gr.Video, gr.Audio, gr.State):
        assert cls.update(visible=True) == {"__type__": "update", "visible": True}


def test_handler_updates_reach_the_browser_translated():
    ui, parts, handlers = build_extension_ui()
    state = SessionState(ui)
    run, mode, notes, image = run_event(ui, handlers["on_run"], ["fast", "hello"], state)
    assert run == {"__type__": "update", "value": "Again", "visible": True}
    assert mode["choices"] == [["fast", "fast"], ["slow", "slow"], ["new", "new"]] and mode["value"] == "new"
    assert notes == {"__type__": "update", "value": "fast:hello", "lines": 3}
    assert image == {"__type__": "update", "sources": ["webcam"]}
    # the dropdown's new choice is accepted by the next event, as the updated page sends it
    assert run_event(ui, handlers["on_mode"], ["new"], state) == ["NEW"]


def test_dropdown_value_outside_its_choices_is_accepted():
    ui, parts, handlers = build_extension_ui()
    assert parts["mode"].value == "turbo"
    assert run_event(ui, handlers["on_mode"], ["turbo"]) == ["TURBO"]


def test_sketch_image_gives_handlers_gradio3_values(tmp_path):
    from gradio.components.image_editor import EditorData
    from gradio.data_classes import FileData
    from PIL import Image

    ui, parts, _ = build_extension_ui()
    with ui:
        color = gr.Image(source="upload", tool="color-sketch", type="numpy", elem_id="ext_color")
    by_id = config_by_elem_id(ui)
    assert by_id["ext_image"]["type"] == by_id["ext_color"]["type"] == "imageeditor"  # drawable in the page
    assert by_id["ext_image"]["props"]["brush"]["default_size"] == 8                  # brush_radius=8

    photo = Image.new("RGB", (16, 16), (200, 10, 10))
    stroke = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    stroke.paste((255, 255, 255, 255), (4, 4, 8, 8))
    drawn = photo.copy()
    drawn.paste((255, 255, 255), (4, 4, 8, 8))
    for name, image in (("photo", photo), ("stroke", stroke), ("drawn", drawn)):
        image.save(tmp_path / f"{name}.png")
    payload = EditorData(background=FileData(path=str(tmp_path / "photo.png")),
                         layers=[FileData(path=str(tmp_path / "stroke.png"))],
                         composite=FileData(path=str(tmp_path / "drawn.png")))

    value = parts["image"].preprocess(payload)          # tool="sketch", type="pil": {"image", "mask"}
    assert value["image"].mode == "RGB" and value["image"].getpixel((5, 5)) == (200, 10, 10)
    mask = value["mask"].convert("L")
    assert mask.getpixel((5, 5)) == 255 and mask.getpixel((0, 0)) == 0 and mask.getbbox() == (4, 4, 8, 8)
    array = color.preprocess(payload)                   # tool="color-sketch", numpy: the drawn image
    assert array.shape == (16, 16, 3) and tuple(array[5, 5]) == (255, 255, 255) and tuple(array[0, 0]) == (200, 10, 10)
    assert parts["image"].postprocess({"image": photo, "mask": stroke}).background is not None


def test_constructor_translations():
    translate = gradio_extensions.translate_component_kwargs
    assert translate(gr.Video, {"source": "webcam"}) == {"sources": ["webcam"]}
    assert translate(gr.Audio, {"source": "microphone"}) == {"sources": ["microphone"]}
    assert translate(gr.Image, {"source": "canvas"}) == {}
    assert translate(gr.File, {"type": "file"}) == {"type": "filepath"}
    assert translate(gr.Column, {"scale": 0.4}) == {"scale": 1}
    with gr.Blocks():
        video = gr.Video(source="upload", mirror_webcam=True)
        audio = gr.Audio(source="microphone", type="numpy")
        files = gr.File(type="file", file_count="multiple")
        frame = gr.Dataframe(headers=["a"], max_rows=5, overflow_row_behaviour="paginate")
    assert video.sources == ["upload"] and audio.sources == ["microphone"]
    assert files.type == "filepath" and frame.headers == ["a"]


def test_removed_names_exist():
    assert gr.Box is gr.Group and gr.Variable is gr.State
    assert issubclass(gr.Textbox, gr.components.IOComponent)
    assert isinstance(gr.components.FormComponent, type)
    assert gr.inputs.Textbox is gr.Textbox and gr.outputs.Image is gr.Image

    class MyButton(gr.Button):  # an extension's own component, defined after install()
        def __init__(self, **kwargs):
            super().__init__(elem_classes=["mine"], **kwargs)

    with gr.Blocks() as ui:
        button = MyButton(value="x", elem_id="mine", tooltip="t", variant="primary").style(full_width=True)
        button.click(fn=None, _js="() => 0")
    assert button.webui_tooltip == "t" and button.scale == 1
    assert [d["js"] for d in ui.config["dependencies"]] == ["() => 0"]
    page = config_by_elem_id(ui)["mine"]
    assert page["type"] == "button"                           # drawn by Gradio's own button
    assert page["props"]["variant"] == "primary" and page["props"]["scale"] == 1
    assert not (Path(__file__).with_suffix(".pyi")).exists()  # no Gradio stub written beside the extension


def test_gradio_extensons_alias():
    from modules import gradio_extensons
    assert gradio_extensons.install is gradio_extensions.install
    assert gradio_extensons.add_classes_to_gradio_component is gradio_extensions.add_classes_to_gradio_component


# --- before/after component hooks ----------------------------------------------------------------------------
class FakeRunner:
    """Stands in for the ScriptRunner being built: records its component hooks."""

    def __init__(self, calls: list):
        self.calls = calls

    def before_component(self, component, **kwargs):
        self.calls.append(("runner-before", kwargs.get("elem_id"), hasattr(component, "_id")))

    def after_component(self, component, **kwargs):
        self.calls.append(("runner-after", kwargs.get("elem_id"), component.value))


def test_component_hooks_fire_around_construction(component_callbacks, caplog):
    calls: list = []
    attached: dict[str, Any] = {}

    def before(component, **kwargs):
        calls.append(("cb-before", kwargs["elem_id"], kwargs["label"]))

    def after(component, **kwargs):
        calls.append(("cb-after", kwargs["elem_id"], component.value))
        if kwargs["elem_id"] == "ext_mode":   # what extensions do: find by elem_id, attach an event
            attached["dep"] = component.change(fn=lambda v: v, inputs=[component], outputs=[component],
                                               _js="(v) => v")

    def broken(component, **kwargs):
        raise RuntimeError("extension bug")

    script_callbacks.on_before_component(before)
    script_callbacks.on_after_component(after)
    script_callbacks.on_after_component(broken)
    scripts.scripts_current = FakeRunner(calls)
    with caplog.at_level(logging.ERROR):
        ui, parts, _ = build_extension_ui()

    mode = [c for c in calls if c[1] == "ext_mode"]
    assert mode == [("runner-before", "ext_mode", False), ("cb-before", "ext_mode", "Mode"),
                    ("cb-after", "ext_mode", "turbo"), ("runner-after", "ext_mode", "turbo")]
    assert ("cb-before", "ext_run", None) in calls                  # defaults present, as in A1111
    assert ("runner-after", None, {"runs": 0}) in calls              # gr.Variable is a component too
    assert "extension bug" in caplog.text                            # logged, the UI still built
    assert any(d.get("js") == "(v) => v" for d in ui.config["dependencies"])
    assert "ext_box" not in {c[1] for c in calls}                   # layouts are not components


def test_hooks_skip_components_built_as_updates(component_callbacks):
    seen: list = []
    script_callbacks.on_after_component(lambda component, **kwargs: seen.append(kwargs.get("elem_id")))
    with gr.Blocks() as ui:
        box = gr.Textbox(elem_id="target")

        def handler():
            return gr.Textbox(value="new", elem_id="built-in-handler")
        box.submit(handler, outputs=[box])
    assert seen == ["target"]
    assert run_event(ui, handler, [])[0]["value"] == "new"
    assert seen == ["target"]


def test_install_twice_is_harmless():
    gradio_extensions.install()
    gradio_extensions.install()
    click = gr.Button.click
    assert getattr(click, "_serena_gradio3", False) and not getattr(click.__wrapped__, "_serena_gradio3", False)
    init = gr.Image.__init__
    assert getattr(init, "_serena_gradio3", False) and not getattr(init.__wrapped__, "_serena_gradio3", False)
    with gr.Blocks() as ui:
        button = gr.Button("x")
        button.click(fn=None, _js="() => 1")
    assert len(ui.config["dependencies"]) == 1


def test_serena_ui_builds_after_install(serena, component_callbacks):
    from modules import ui
    seen: list = []
    script_callbacks.on_after_component(lambda component, **kwargs: seen.append(kwargs.get("elem_id")))
    blocks = ui.create_ui()
    by_id = config_by_elem_id(blocks)
    assert by_id["txt2img_steps"]["props"]["value"] == 20
    assert by_id["pnginfo_image"]["props"]["sources"] == ["upload", "clipboard"]
    assert {"txt2img_prompt", "txt2img_steps", "img2img_prompt"} <= set(seen)  # extensions hook Serena's UI


def test_input_accordion_copied_outside_a_page_is_a_plain_checkbox():
    """Gradio copies a component (outside any Blocks) to apply an update sent to it, e.g. when a
    send-to button pastes an infotext into a script's InputAccordion: that copy must not wire events."""
    from modules.ui_components import InputAccordion
    copy = InputAccordion(True, label="Soft inpainting", elem_id="probe_accordion")
    assert copy.value is True and copy.accordion is None
