"""The Extras tab and PNG Info's "Send to img2img" in a real browser (issue 11, items 4 and 6)."""
from __future__ import annotations

from conftest import shot
from PIL import Image, PngImagePlugin

IMAGE_SIZE_JS = "el => el.complete && el.naturalWidth > 0 ? [el.naturalWidth, el.naturalHeight] : null"


def picture(path, parameters: str | None = None) -> str:
    """A 64x48 two-colour PNG at `path`, with a `parameters` chunk when given."""
    image = Image.new("RGB", (64, 48), (20, 120, 200))
    image.paste((240, 200, 30), (0, 0, 32, 24))
    info = PngImagePlugin.PngInfo()
    if parameters:
        info.add_text("parameters", parameters)
    image.save(path, pnginfo=info)
    return str(path)


def natural_size(page, selector: str) -> list[int]:
    """The decoded size of the image at `selector`, once it has loaded."""
    handle = page.wait_for_function(
        f"() => {{ const el = document.querySelector({selector!r}); return el && ({IMAGE_SIZE_JS})(el); }}",
        timeout=30000)
    return handle.json_value()


def test_extras_upscale_by_two_doubles_the_image(page, tmp_path):
    page.get_by_role("tab", name="Extras", exact=True).click()
    page.wait_for_selector("#extras_image", state="visible")
    page.set_input_files("#extras_image input[type=file]", picture(tmp_path / "in.png"))
    page.wait_for_selector("#extras_image img", timeout=30000)
    page.click("#extras_upscaler_1 input")
    page.get_by_role("option", name="Lanczos", exact=True).click()
    resize = page.locator("#extras_upscaling_resize input[type=number]")
    resize.fill("2")
    resize.press("Enter")
    page.click("#extras_generate")
    assert natural_size(page, "#extras_gallery img") == [128, 96]
    page.wait_for_selector("#html_info_extras:has-text('Postprocess upscale by: 2')", timeout=30000)
    shot(page, "extras-upscaled")
    assert page.serena_errors == []


def test_png_info_send_to_img2img_carries_the_image(page, tmp_path):
    infotext = "a red fox\nSteps: 3, Sampler: Euler, CFG scale: 5, Seed: 42, Size: 64x48"
    page.get_by_role("tab", name="PNG Info", exact=True).click()
    page.wait_for_selector("#pnginfo_image", state="visible")
    page.set_input_files("#pnginfo_image input[type=file]", picture(tmp_path / "info.png", infotext))
    page.wait_for_function(
        "() => (document.querySelector('#pnginfo_generation_info textarea') || {}).value?.includes('a red fox')",
        timeout=30000)
    page.click("#img2img_tab")
    page.wait_for_selector("#tab_img2img", state="visible", timeout=30000)
    assert natural_size(page, "#img2img_image img") == [64, 48]
    assert page.input_value("#img2img_prompt textarea") == "a red fox"
    shot(page, "pnginfo-sent-to-img2img")
    assert page.serena_errors == []
