"""A1111's small UI building blocks (`modules.ui_components`), as Gradio 6 component subclasses.

Each class is a Gradio "template" (`is_template = True`): the browser renders it with its base
component (a ToolButton is a Button, an InputAccordion a Checkbox), so no custom frontend code is
needed. Everything here can be built inside a bare `gr.Blocks()`, with or without a running server.

`InputAccordion` is a checkbox whose value is whether its accordion is open ("enabled"): the
accordion's expand/collapse set the checkbox, and setting the checkbox (a pasted infotext, a
script) opens or closes the accordion. Use it as a context manager to fill the accordion.
"""
from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
from gradio import component_meta as _component_meta  # noqa: E402
from gradio.layouts import Form  # noqa: E402

# Gradio writes a `.pyi` stub next to the source of every component class it sees defined; these
# templates need none, so the writer is switched off while this module defines its classes.
_write_pyi = getattr(_component_meta, "create_or_modify_pyi", None)
if _write_pyi is not None:
    _component_meta.create_or_modify_pyi = lambda *args, **kwargs: None


_UNSET = object()


def _classes(kwargs: dict[str, Any], *extra: str) -> list[str]:
    """`extra` classes followed by the caller's `elem_classes` (a string or a list)."""
    given = kwargs.pop("elem_classes", None) or []
    if isinstance(given, str):
        given = [given]
    return [*extra, *[c for c in given if c not in extra]]


class FormComponent:
    """Mixin: the component belongs in a form (Gradio groups consecutive form components)."""

    def get_expected_parent(self) -> type:
        return Form


class ToolButton(gr.Button, FormComponent):
    """A small square button showing one symbol, as beside A1111's dropdowns."""

    is_template = True

    def __init__(self, value: Any = "", **kwargs: Any) -> None:
        # named parameters only after `value`: Gradio's constructor wrapper drops extra positionals
        kwargs.pop("tooltip", None)
        super().__init__(value, elem_classes=_classes(kwargs, "tool", "serena-tool"), **kwargs)


class ResizeHandleRow(gr.Row):
    """A row whose columns the user can resize (A1111 adds a drag handle in the browser)."""

    is_template = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(elem_classes=_classes(kwargs, "resize-handle-row"), **kwargs)


class FormRow(gr.Row, FormComponent):
    """A row inside a form."""

    is_template = True


class FormColumn(gr.Column, FormComponent):
    """A column inside a form."""

    is_template = True


class FormGroup(gr.Group, FormComponent):
    """A group inside a form."""

    is_template = True


class FormHTML(gr.HTML, FormComponent):
    """An HTML block inside a form."""

    is_template = True


class FormColorPicker(gr.ColorPicker, FormComponent):
    """A color picker inside a form."""

    is_template = True


class DropdownMulti(gr.Dropdown, FormComponent):
    """A dropdown where several choices can be selected (its value is a list)."""

    is_template = True

    def __init__(self, choices: Any = None, value: Any = _UNSET, **kwargs: Any) -> None:
        kwargs.pop("tooltip", None)
        kwargs["multiselect"] = True
        if value is not _UNSET:
            kwargs["value"] = value
        super().__init__(choices, **kwargs)


class DropdownEditable(gr.Dropdown, FormComponent):
    """A dropdown that also accepts a typed value not among its choices."""

    is_template = True

    def __init__(self, choices: Any = None, value: Any = _UNSET, **kwargs: Any) -> None:
        kwargs.pop("tooltip", None)
        kwargs["allow_custom_value"] = True
        if value is not _UNSET:
            kwargs["value"] = value
        super().__init__(choices, **kwargs)


_accordion_counter = 0


class InputAccordion(gr.Checkbox):
    """A checkbox shown as an accordion: the value (bool) is whether the accordion is open.

    `InputAccordion(False, label="My feature")` used as `with InputAccordion(...) as enabled:`
    puts the components built in the block inside the accordion; `enabled` is the checkbox,
    so it can be returned from a script's `ui()` and its value arrives as a bool argument.
    """

    is_template = True

    def __init__(self, value: bool = False, **kwargs: Any) -> None:
        global _accordion_counter
        kwargs.pop("tooltip", None)
        self.accordion_id = kwargs.get("elem_id") or f"input-accordion-{_accordion_counter}"
        _accordion_counter += 1
        label = kwargs.get("label") or "Accordion"
        checkbox_kwargs = {k: v for k, v in kwargs.items() if k not in ("open", "elem_classes")}
        checkbox_kwargs.update(elem_id=f"{self.accordion_id}-checkbox", visible=False, label=label)
        super().__init__(bool(value), **checkbox_kwargs)
        self.accordion = None
        if gr.context.Context.root_block is None:
            # Outside a page being built (Gradio copies a component this way to apply an update sent
            # to it): the checkbox alone; the accordion and its events belong to the page's copy.
            return

        accordion_kwargs = {k: kwargs[k] for k in ("visible", "render") if k in kwargs}
        self.accordion = gr.Accordion(label=label, open=bool(value), elem_id=self.accordion_id,
                                      elem_classes=_classes(dict(kwargs), "input-accordion"), **accordion_kwargs)
        # open/close → checkbox; checkbox set from elsewhere → open/close
        self.accordion.expand(fn=None, js="() => true", inputs=None, outputs=[self], queue=False)
        self.accordion.collapse(fn=None, js="() => false", inputs=None, outputs=[self], queue=False)
        self.change(fn=lambda checked: gr.Accordion(open=bool(checked)), inputs=[self], outputs=[self.accordion],
                    queue=False, show_progress="hidden")

    def extra(self) -> gr.Column:
        """A column for controls shown next to the accordion's label (A1111 puts them in the header)."""
        return gr.Column(elem_id=f"{self.accordion_id}-extra", elem_classes=["input-accordion-extra"], min_width=0)

    def __enter__(self) -> "InputAccordion":
        self.accordion.__enter__()
        return self

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        self.accordion.__exit__(exc_type, exc_val, exc_tb)


if _write_pyi is not None:
    _component_meta.create_or_modify_pyi = _write_pyi
