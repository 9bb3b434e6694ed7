"""Scripts from the page (issue 11): the X/Y/Z plot chosen in the Script dropdown renders its own
controls and runs; every cell reaches the runner (the runner contract's UI case)."""
from __future__ import annotations

from conftest import RunnerCalls, fill_kept, shot, small_txt2img


def test_xyz_plot_from_the_page_runs_each_cell_through_the_runner(page, monkeypatch):
    runs = RunnerCalls(monkeypatch)
    small_txt2img(page, "a red cube", 2)
    page.locator("#script_list input").first.click()
    page.get_by_role("option", name="X/Y/Z plot").first.click()
    x_type = page.get_by_label("X type").first
    x_type.click()
    page.get_by_role("option", name="Steps", exact=True).first.click()
    fill_kept(page.get_by_label("X values").first, "1,2")
    page.locator("#txt2img_generate").click()
    page.wait_for_function("document.querySelectorAll('#txt2img_gallery img').length > 0", timeout=120000)
    page.wait_for_function(
        "document.querySelector('#txt2img_infotext textarea').value.includes('X Type')", timeout=30000)
    shot(page, "xyz-plot-from-the-page")
    assert sorted(runs.steps) == [1, 2]  # one runner call per cell
    info = page.locator("#txt2img_infotext textarea").input_value()
    assert "X Type: Steps" in info and 'X Values: "1,2"' in info
    assert page.serena_errors == []
