"""Scripts from the page (issue 11): the X/Y/Z plot chosen in the Script dropdown renders its own
controls and runs; every cell reaches the runner (the runner contract's UI case)."""
from __future__ import annotations

from conftest import shot

from modules.runtime.runner import ProcessingRunner


def set_number(page, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(value)
    box.press("Enter")


def test_xyz_plot_from_the_page_runs_each_cell_through_the_runner(page, monkeypatch):
    runs = []
    original = ProcessingRunner.run

    def recording(self, request):
        runs.append(request.processing.steps)
        return original(self, request)

    monkeypatch.setattr(ProcessingRunner, "run", recording)
    page.locator("#txt2img_prompt textarea").fill("a red cube")
    for elem_id, value in (("txt2img_width", "64"), ("txt2img_height", "64"), ("txt2img_steps", "2")):
        set_number(page, elem_id, value)
    page.locator("#script_list input").first.click()
    page.get_by_role("option", name="X/Y/Z plot").first.click()
    x_type = page.get_by_label("X type").first
    x_type.click()
    page.get_by_role("option", name="Steps", exact=True).first.click()
    page.get_by_label("X values").first.fill("1,2")
    page.locator("#txt2img_generate").click()
    page.wait_for_function("document.querySelectorAll('#txt2img_gallery img').length > 0", timeout=120000)
    page.wait_for_function(
        "document.querySelector('#txt2img_infotext textarea').value.includes('X Type')", timeout=30000)
    shot(page, "xyz-plot-from-the-page")
    assert sorted(runs) == [1, 2]  # one runner call per cell
    info = page.locator("#txt2img_infotext textarea").input_value()
    assert "X Type: Steps" in info and 'X Values: "1,2"' in info
    assert page.serena_errors == []
