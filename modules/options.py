"""Options: definitions with A1111 names and defaults, `config.json` persistence, per-job overrides.

A job's `override_settings` never mutate the global options. :meth:`Options.override` installs
them in a context variable for the duration of a `with` block, and every read through
`shared.opts.<name>` inside that block (in the same thread or task) sees them. Two jobs running
in different contexts can therefore not see each other's settings.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from modules import errors


@dataclass
class OptionInfo:
    """One option: its default, its label in the UI, and how it behaves.

    The leading fields are in A1111's order, so extensions' positional calls such as
    `OptionInfo(1, "Label", gr.Slider, {"minimum": 0, "maximum": 4})` mean the same here.
    """

    default: Any = None
    label: str = ""
    component: Any = None
    component_args: Any = None
    onchange: Callable[[], None] | None = None
    section: Any = "other"
    refresh: Callable[[], None] | None = None
    comment_before: str = ""
    comment_after: str = ""
    infotext: str | None = None
    restrict_api: bool = False
    category_id: str | None = None
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    comment: str = ""
    do_not_save: bool = False

    def info(self, text: str) -> "OptionInfo":
        """Add an explanation shown after the label."""
        self.comment = text
        self.comment_after += f"<span class='info'>({text})</span>"
        return self

    def link(self, label: str, url: str) -> "OptionInfo":
        """Add a `[label]` link shown before the label."""
        self.comment_before += f"[<a href='{url}' target='_blank'>{label}</a>]"
        return self

    def js(self, label: str, js_func: str) -> "OptionInfo":
        self.comment_before += f"[<a onclick='{js_func}(); return false'>{label}</a>]"
        return self

    def html(self, html: str) -> "OptionInfo":
        self.comment_after += html
        return self

    def needs_restart(self) -> "OptionInfo":
        self.comment_after += " <span class='info'>(requires restart)</span>"
        return self

    def needs_reload_ui(self) -> "OptionInfo":
        self.comment_after += " <span class='info'>(requires Reload UI)</span>"
        return self


class OptionHTML(OptionInfo):
    """A block of HTML among the settings; it stores nothing."""

    def __init__(self, text: str):
        super().__init__(str(text).strip(), label="", do_not_save=True)


def options_section(section_identifier: tuple, options_dict: dict[str, OptionInfo]) -> dict[str, OptionInfo]:
    """Put every option of `options_dict` in the settings section `(id, label)`, or
    `(id, label, category_id)`; returns `options_dict` (A1111's helper)."""
    for info in options_dict.values():
        info.section = tuple(section_identifier[:2])
        if len(section_identifier) == 3:
            info.category_id = section_identifier[2]
    return options_dict


def _all_option_names() -> dict[str, Any]:
    """Component arguments of `quicksettings_list`: every option name is a choice."""
    from modules import shared
    return {"choices": list(shared.opts.data_labels)}


def _localization_choices() -> dict[str, Any]:
    """The Localization setting's choices: "None" and every localization file found (data folder, extensions)."""
    from modules import ui_head
    return {"choices": ["None", *ui_head.localization_files()]}


def _sections() -> dict[str, dict[str, OptionInfo]]:
    """The option table. Names and defaults are A1111's (v1.10)."""
    O = OptionInfo
    return {
        "saving-images": {
            "samples_save": O(True, "Always save all generated images"),
            "samples_format": O("png", "File format for images", choices=("png", "jpg", "jpeg", "webp")),
            "samples_filename_pattern": O("", "Images filename pattern"),
            "save_images_add_number": O(True, "Add number to filename when saving"),
            "save_images_replace_action": O("Replace", "Saving the image to an existing file"),
            "grid_save": O(True, "Always save all generated image grids"),
            "grid_format": O("png", "File format for grids", choices=("png", "jpg", "jpeg", "webp")),
            "grid_extended_filename": O(False, "Add extended info (seed, prompt) to filename when saving grid"),
            "grid_only_if_multiple": O(True, "Do not save grids consisting of one picture"),
            "grid_prevent_empty_spots": O(False, "Prevent empty spots in grid"),
            "grid_zip_filename_pattern": O("", "Archive filename pattern"),
            "n_rows": O(-1, "Grid row count; use -1 for autodetect and 0 for it to be same as batch size"),
            "grid_background_color": O("#ffffff", "Background color for image grids"),
            "enable_pnginfo": O(True, "Save text information about generation parameters as chunks to png files"),
            "save_txt": O(False, "Create a text file with infotext next to every image"),
            "save_images_before_face_restoration": O(False, "Save a copy of image before doing face restoration."),
            "save_images_before_highres_fix": O(False, "Save a copy of image before applying highres fix."),
            "save_images_before_color_correction": O(False, "Save a copy of image before applying color correction"),
            "save_mask": O(False, "For inpainting, save a copy of the greyscale mask"),
            "save_mask_composite": O(False, "For inpainting, save a masked composite"),
            "jpeg_quality": O(80, "Quality for saved jpeg and avif images", minimum=1, maximum=100),
            "webp_lossless": O(False, "Use lossless compression for webp images"),
            "export_for_4chan": O(True, "Save copy of large images as JPG"),
            "img_downscale_threshold": O(4.0, "File size limit for the above option, MB"),
            "target_side_length": O(4000.0, "Width/height limit for the above option, in pixels"),
            "img_max_size_mp": O(200.0, "Maximum image size, in megapixels"),
            "use_original_name_batch": O(True, "Use original name for output filename during batch process"),
            "use_upscaler_name_as_suffix": O(False, "Use upscaler name as filename suffix in the extras tab"),
            "save_selected_only": O(True, "When using 'Save' button, only save a single selected image"),
            "save_init_img": O(False, "Save init images when using img2img"),
            "temp_dir": O("", "Directory for temporary images; leave empty for default"),
            "clean_temp_dir_at_start": O(False, "Cleanup non-default temporary directory when starting webui"),
            "notification_audio": O(True, "Play notification sound after image generation").info(
                "notification.mp3 should be present in the root directory").needs_reload_ui(),
            "notification_volume": O(100, "Notification sound volume", minimum=0, maximum=100),
        },
        "saving-paths": {
            "outdir_samples": O("", "Output directory for images; if empty, defaults to three directories below"),
            "outdir_txt2img_samples": O("outputs/txt2img-images", "Output directory for txt2img images"),
            "outdir_img2img_samples": O("outputs/img2img-images", "Output directory for img2img images"),
            "outdir_extras_samples": O("outputs/extras-images", "Output directory for images from extras tab"),
            "outdir_grids": O("", "Output directory for grids; if empty, defaults to two directories below"),
            "outdir_txt2img_grids": O("outputs/txt2img-grids", "Output directory for txt2img grids"),
            "outdir_img2img_grids": O("outputs/img2img-grids", "Output directory for img2img grids"),
            "outdir_save": O("log/images", "Directory for saving images using the Save button"),
            "outdir_init_images": O("outputs/init-images", "Directory for saving init images when using img2img"),
        },
        "saving-to-dirs": {
            "save_to_dirs": O(True, "Save images to a subdirectory"),
            "grid_save_to_dirs": O(True, "Save grids to a subdirectory"),
            "use_save_to_dirs_for_ui": O(False, "When using \"Save\" button, save images to a subdirectory"),
            "directories_filename_pattern": O("[date]", "Directory name pattern"),
            "directories_max_prompt_words": O(8, "Max prompt words for [prompt_words] pattern", minimum=1, maximum=20),
        },
        "sd": {
            "sd_model_checkpoint": O(None, "Stable Diffusion checkpoint", infotext="Model hash"),
            "sd_checkpoints_limit": O(1, "Maximum number of checkpoints loaded at the same time"),
            "sd_checkpoints_keep_in_cpu": O(True, "Only keep one model on device"),
            "sd_checkpoint_cache": O(0, "Checkpoints to cache in RAM"),
            "sd_unet": O("Automatic", "SD Unet"),
            "sd_hypernetwork": O("None", "Add hypernetwork to prompt"),
            "sd_prediction_type": O("Automatic", "Model prediction type (Automatic: a .yaml beside the checkpoint, "
                                    "else detected as A1111 does)", choices=("Automatic", "eps", "v")),
            "enable_quantization": O(False, "Enable quantization in K samplers for sharper and cleaner results"),
            "emphasis": O("Original", "Emphasis mode", infotext="Emphasis",
                          choices=("None", "Ignore", "Original", "No norm")),
            "enable_batch_seeds": O(True, "Make K-diffusion samplers produce same images in a batch as when making a single image"),
            "comma_padding_backtrack": O(20, "Prompt word wrap length limit", minimum=0, maximum=74),
            "sdxl_clip_l_skip": O(False, "Clip skip SDXL"),
            "CLIP_stop_at_last_layers": O(1, "Clip skip", infotext="Clip skip", minimum=1, maximum=12),
            "upcast_attn": O(False, "Upcast cross attention layer to float32"),
            "randn_source": O("GPU", "Random number generator source.", infotext="RNG", choices=("GPU", "CPU", "NV")),
            "tiling": O(False, "Tiling", infotext="Tiling"),
            "hires_fix_refiner_pass": O("second pass", "Hires fix: which pass to enable refiner for"),
        },
        "sdxl": {
            "sdxl_crop_top": O(0, "crop top coordinate", minimum=0, maximum=16384),
            "sdxl_crop_left": O(0, "crop left coordinate", minimum=0, maximum=16384),
            "sdxl_refiner_low_aesthetic_score": O(2.5, "SDXL low aesthetic score", minimum=0.0, maximum=10.0),
            "sdxl_refiner_high_aesthetic_score": O(6.0, "SDXL high aesthetic score", minimum=0.0, maximum=10.0),
        },
        "vae": {
            "sd_vae_checkpoint_cache": O(0, "VAE Checkpoints to cache in RAM"),
            "sd_vae": O("Automatic", "SD VAE", infotext="VAE"),
            "sd_vae_overrides_per_model_preferences": O(True, "Selected VAE overrides per-model preferences"),
            "auto_vae_precision_bfloat16": O(False, "Automatically convert VAE to bfloat16"),
            "auto_vae_precision": O(True, "Automatically revert VAE to 32-bit floats"),
            "sd_vae_encode_method": O("Full", "VAE type for encode", infotext="VAE Encoder"),
            "sd_vae_decode_method": O("Full", "VAE type for decode", infotext="VAE Decoder"),
        },
        "img2img": {
            "inpainting_mask_weight": O(1.0, "Inpainting conditioning mask strength", infotext="Conditional mask weight"),
            "initial_noise_multiplier": O(1.0, "Noise multiplier for img2img", infotext="Noise multiplier"),
            "img2img_extra_noise": O(0.0, "Extra noise multiplier for img2img and hires fix", infotext="Extra noise"),
            "img2img_color_correction": O(False, "Apply color correction to img2img results to match original colors."),
            "img2img_fix_steps": O(False, "With img2img, do exactly the amount of steps the slider specifies."),
            "img2img_background_color": O("#ffffff", "With img2img, fill transparent parts of the input image with this color."),
            "img2img_sketch_default_brush_color": O("#ffffff", "Sketch initial brush color"),
            "img2img_inpaint_mask_brush_color": O("#ffffff", "Inpaint mask brush color"),
            "img2img_inpaint_sketch_default_brush_color": O("#ffffff", "Inpaint sketch initial brush color"),
            "return_mask": O(False, "For inpainting, include the greyscale mask in results for web"),
            "return_mask_composite": O(False, "For inpainting, include masked composite in results for web"),
            "img2img_batch_show_results_limit": O(32, "Show the first N batch img2img results in UI"),
            "img2img_editor_height": O(720, "Height of the image editor", minimum=80, maximum=1600).info(
                "in pixels").needs_reload_ui(),
            "overlay_inpaint": O(True, "Overlay original for inpaint"),
        },
        "optimizations": {
            "cross_attention_optimization": O("Automatic", "Cross attention optimization"),
            "vae_tiling": O("Automatic", "Tiled VAE: decode and encode large images in overlapping tiles, so memory "
                                         "stays bounded", choices=("Automatic", "Always", "Never")),
            "vae_tiling_threshold": O(1536 * 1536, "Tiled VAE (Automatic): tile images larger than this many pixels "
                                                   "(width × height)", minimum=65536, maximum=64 * 1024 * 1024),
            "vae_tile_size": O(512, "Tiled VAE: tile size in pixels", minimum=256, maximum=2048),
            "s_min_uncond": O(0.0, "Negative Guidance minimum sigma", infotext="NGMS"),
            "s_min_uncond_all": O(False, "Negative Guidance minimum sigma all steps", infotext="NGMS all steps"),
            "token_merging_ratio": O(0.0, "Token merging ratio", infotext="Token merging ratio"),
            "token_merging_ratio_img2img": O(0.0, "Token merging ratio for img2img"),
            "token_merging_ratio_hr": O(0.0, "Token merging ratio for high-res pass", infotext="Token merging ratio hr"),
            "pad_cond_uncond": O(False, "Pad prompt/negative prompt", infotext="Pad conds"),
            "pad_cond_uncond_v0": O(False, "Pad prompt/negative prompt (v0)", infotext="Pad conds v0"),
            "persistent_cond_cache": O(True, "Persistent cond cache"),
            "batch_cond_uncond": O(True, "Batch cond/uncond"),
            "fp8_storage": O("Disable", "FP8 weight", infotext="FP8 weight"),
            "cache_fp16_weight": O(False, "Cache FP16 weight for LoRA", infotext="Cache FP16 weight for LoRA"),
        },
        "compatibility": {
            "auto_backcompat": O(True, "Automatic backward compatibility"),
            "use_old_emphasis_implementation": O(False, "Use old emphasis implementation."),
            "use_old_karras_scheduler_sigmas": O(False, "Use old karras scheduler sigmas (0.1 to 10)."),
            "no_dpmpp_sde_batch_determinism": O(False, "Do not make DPM++ SDE deterministic across different batch sizes."),
            "use_old_hires_fix_width_height": O(False, "For hires fix, use width/height sliders to set final resolution rather than first pass"),
            "dont_fix_second_order_samplers_schedule": O(False, "Do not fix prompt schedule for second order samplers."),
            "hires_fix_use_firstpass_conds": O(False, "For hires fix, calculate conds of second pass using extra networks of first pass."),
            "use_old_scheduling": O(False, "Use old prompt editing timelines.", infotext="Old prompt editing timelines"),
            "use_downcasted_alpha_bar": O(False, "Downcast model alphas_cumprod to fp16 before sampling.", infotext="Downcast alphas_cumprod"),
            "refiner_switch_by_sample_steps": O(False, "Switch to refiner by sampling steps instead of model timesteps.", infotext="Refiner switch by sampling steps"),
        },
        "infotext": {
            "add_model_hash_to_info": O(True, "Add model hash to infotext"),
            "add_model_name_to_info": O(True, "Add model name to infotext"),
            "add_user_name_to_info": O(False, "Add user name to infotext when authenticated"),
            "add_version_to_infotext": O(True, "Add program version to infotext"),
            "disable_weights_auto_swap": O(True, "Disregard checkpoint information from pasted infotext"),
            "infotext_skip_pasting": O([], "Disregard fields from pasted infotext"),
            "infotext_styles": O("Apply if any", "Infer styles from prompts of pasted infotext"),
        },
        "ui": {
            "show_progressbar": O(True, "Show progressbar"),
            "live_previews_enable": O(True, "Show live previews of the created image"),
            "live_previews_image_format": O("png", "Live preview file format", choices=("jpeg", "png", "webp")),
            "show_progress_grid": O(True, "Show previews of all images generated in a batch as a grid"),
            "show_progress_every_n_steps": O(10, "Live preview display period", minimum=-1, maximum=32),
            "show_progress_type": O("Approx NN", "Live preview method"),
            "live_preview_content": O("Prompt", "Live preview subject"),
            "live_preview_refresh_period": O(1000, "Progressbar and preview update period"),
            "enable_prompt_comments": O(True, "Enable comments"),
            "return_grid": O(True, "Show grid in gallery"),
            "do_not_show_images": O(False, "Do not show any images in gallery"),
            "js_modal_lightbox": O(True, "Full page image viewer: enable"),
            "samplers_in_dropdown": O(True, "Use dropdown for sampler selection instead of radio group"),
            "dimensions_and_batch_together": O(True, "Show Width/Height and Batch sliders in same row"),
            "sd_checkpoint_dropdown_use_short": O(False, "Checkpoint dropdown: use filenames without paths"),
            "hires_fix_show_sampler": O(False, "Hires fix: show hires checkpoint and sampler selection"),
            "hires_fix_show_prompts": O(False, "Hires fix: show hires prompt and negative prompt"),
            "quicksettings_list": O(["sd_model_checkpoint"], "Quicksettings list",
                                   component_args=_all_option_names),
            "ui_reorder_list": O([], "UI item order for txt2img/img2img tabs"),
            "gradio_theme": O("Default", "Gradio theme"),
            "send_seed": O(True, "Send seed when sending prompt or image to other interface"),
            "send_size": O(True, "Send size when sending prompt or image to another interface"),
            "localization": O("None", "Localization", component_args=_localization_choices).needs_reload_ui(),
            "include_styles_into_token_counters": O(True, "Count tokens of enabled styles"),
            "extra_networks_default_multiplier": O(1.0, "Default multiplier for extra networks", minimum=0.0,
                                                   maximum=2.0),
            "extra_networks_add_text_separator": O(" ", "Extra networks separator: text added between the "
                                                   "prompt and the tag"),
        },
        "sampler-params": {
            "hide_samplers": O([], "Hide samplers in user interface"),
            "eta_ddim": O(0.0, "Eta for DDIM", infotext="Eta DDIM"),
            "eta_ancestral": O(1.0, "Eta for k-diffusion samplers", infotext="Eta"),
            "ddim_discretize": O("uniform", "img2img DDIM discretize", choices=("uniform", "quad")),
            "s_churn": O(0.0, "sigma churn", infotext="Sigma churn"),
            "s_tmin": O(0.0, "sigma tmin", infotext="Sigma tmin"),
            "s_tmax": O(0.0, "sigma tmax", infotext="Sigma tmax"),
            "s_noise": O(1.0, "sigma noise", infotext="Sigma noise"),
            "sigma_min": O(0.0, "sigma min", infotext="Schedule min sigma"),
            "sigma_max": O(0.0, "sigma max", infotext="Schedule max sigma"),
            "rho": O(0.0, "rho", infotext="Schedule rho"),
            "eta_noise_seed_delta": O(0, "Eta noise seed delta", infotext="ENSD"),
            "always_discard_next_to_last_sigma": O(False, "Always discard next-to-last sigma", infotext="Discard penultimate sigma"),
            "sgm_noise_multiplier": O(False, "SGM noise multiplier", infotext="SGM noise multiplier"),
            "uni_pc_variant": O("bh1", "UniPC variant", choices=("bh1", "bh2", "vary_coeff")),
            "uni_pc_skip_type": O("time_uniform", "UniPC skip type", choices=("time_uniform", "time_quadratic", "logSNR")),
            "uni_pc_order": O(3, "UniPC order", minimum=1, maximum=50),
            "uni_pc_lower_order_final": O(True, "UniPC lower order final"),
            "sd_noise_schedule": O("Default", "Noise schedule for sampling", infotext="Noise Schedule"),
            "beta_dist_alpha": O(0.6, "Beta scheduler - alpha", infotext="Beta schedule alpha"),
            "beta_dist_beta": O(0.6, "Beta scheduler - beta", infotext="Beta schedule beta"),
        },
        "postprocessing": {
            "postprocessing_enable_in_main_ui": O([], "Enable postprocessing operations in txt2img and img2img tabs"),
            "postprocessing_disable_in_extras": O([], "Disable postprocessing operations in extras tab"),
            "postprocessing_operation_order": O([], "Postprocessing operation order"),
            "upscaling_max_images_in_cache": O(5, "Maximum number of images in upscaling cache"),
            "postprocessing_existing_caption_action": O(
                "Ignore", "Action for existing captions", choices=("Ignore", "Keep", "Prepend", "Append")),
        },
        "face-restoration": {
            "face_restoration": O(False, "Restore faces", infotext="Face restoration"),
            "face_restoration_model": O("CodeFormer", "Face restoration model", choices=("CodeFormer", "GFPGAN")).info(
                "weights are not downloaded: CodeFormer needs models/Codeformer/codeformer-v0.1.0.pth, GFPGAN "
                "models/GFPGAN/GFPGANv1.4.pth, both the face detector models/GFPGAN/detection_Resnet50_Final.pth"),
            "code_former_weight": O(0.5, "CodeFormer weight", minimum=0, maximum=1).info("0 = maximum effect; 1 = minimum effect"),
            "face_restoration_unload": O(False, "Move face restoration model from VRAM into RAM after processing"),
        },
        "upscaling": {
            # Model upscalers (modules/upscaler_spandrel.py). HAT uses the ESRGAN tile options, as in A1111.
            "ESRGAN_tile": O(192, "Tile size for ESRGAN upscalers.", minimum=0, maximum=512).info("0 = no tiling"),
            "ESRGAN_tile_overlap": O(8, "Tile overlap for ESRGAN upscalers.", minimum=0, maximum=48)
            .info("Low values = visible seam"),
            "realesrgan_enabled_models": O(["R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B"],
                                           "Select which Real-ESRGAN models to show in the web UI."),
            "dat_enabled_models": O(["DAT x2", "DAT x3", "DAT x4"], "Select which DAT models to show in the web UI."),
            "DAT_tile": O(192, "Tile size for DAT upscalers.", minimum=0, maximum=512).info("0 = no tiling"),
            "DAT_tile_overlap": O(8, "Tile overlap for DAT upscalers.", minimum=0, maximum=48)
            .info("Low values = visible seam"),
            "upscaler_for_img2img": O(None, "Upscaler for img2img"),
            "set_scale_by_when_changing_upscaler": O(
                False, "Automatically set the Scale by factor based on the name of the selected Upscaler."),
            "SWIN_tile": O(192, "Tile size for all SwinIR.", minimum=16, maximum=512),
            "SWIN_tile_overlap": O(8, "Tile overlap, in pixels for SwinIR. Low values = visible seam.",
                                   minimum=0, maximum=48),
            "SCUNET_tile": O(256, "Tile size for SCUNET upscalers.", minimum=0, maximum=512).info("0 = no tiling"),
            "SCUNET_tile_overlap": O(8, "Tile overlap for SCUNET upscalers.", minimum=0, maximum=64)
            .info("Low values = visible seam"),
        },
        "api": {
            "api_enable_requests": O(False, "Allow http:// and https:// URLs for input images in API", restrict_api=True),
            "api_forbid_local_requests": O(True, "Forbid URLs to local resources", restrict_api=True),
            "api_useragent": O("", "User agent for requests", restrict_api=True),
            "api_max_pixels": O(2048 * 2048, "Largest width × height the API accepts for one image", restrict_api=True),
            "api_max_batch_images": O(64, "Largest batch_size × n_iter (and extras batch size) the API accepts", restrict_api=True),
            "api_max_steps": O(150, "Largest number of sampling steps the API accepts", restrict_api=True),
            "api_max_body_mb": O(64, "Largest API request body, in megabytes", restrict_api=True),
            "api_max_prompt_chars": O(20000, "Longest prompt (each of prompt, negative, hires prompts) the API accepts",
                                      restrict_api=True),
            "jobs_keep_finished": O(500, "Finished jobs kept in the job store with their result images (older ones are "
                                         "removed)", minimum=1, maximum=1000000, restrict_api=True),
            "jobs_batch_requests": O(False, "Run queued jobs that wait together with the same model, size, sampler "
                                            "and steps as one batch, where that gives the same images byte for byte",
                                     restrict_api=True),
            "jobs_batch_max": O(4, "Most queued jobs run together as one batch", minimum=2, maximum=16,
                                restrict_api=True),
            "agent_scheduler_enable_callbacks": O(False, "POST a job's result to its callback_url when it finishes "
                                                         "(public addresses only unless local requests are allowed)",
                                                  restrict_api=True),
        },
        "system": {
            "auto_launch_browser": O("Local", "Automatically open webui in browser on startup"),
            "enable_console_prompts": O(False, "Print prompts to console when generating with txt2img and img2img."),
            "show_warnings": O(False, "Show warnings in console."),
            "samples_log_stdout": O(False, "Always print all generation info to standard output"),
            "multiple_tqdm": O(True, "Add a second progress bar to the console that shows progress for an entire job."),
            "list_hidden_files": O(True, "Load models/files in hidden directories"),
            "disable_mmap_load_safetensors": O(False, "Disable memmapping for loading .safetensors files."),
            "hide_ldm_prints": O(True, "Prevent Stability-AI's ldm/sgm modules from printing noise to console."),
            "dump_stacks_on_signal": O(False, "Print stack traces before exiting the program with ctrl+c."),
        },
        "extensions": {
            "disable_all_extensions": O("none", "Disable all extensions (preserves the list of disabled extensions)",
                                        choices=("none", "extra", "all")),
            "disabled_extensions": O([], "Disable these extensions"),
        },
    }


# Folder options and file-name patterns: read-only under --hide-ui-dir-config (A1111's
# `restricted_opts`), and confined to the data folder when set through the API or UI.
FOLDER_OPTS = frozenset({
    "outdir_samples", "outdir_txt2img_samples", "outdir_img2img_samples", "outdir_extras_samples",
    "outdir_grids", "outdir_txt2img_grids", "outdir_img2img_grids", "outdir_save", "outdir_init_images",
    "temp_dir"})
PATTERN_OPTS = frozenset({"samples_filename_pattern", "directories_filename_pattern", "grid_zip_filename_pattern"})
RESTRICTED_OPTS = FOLDER_OPTS | PATTERN_OPTS | {"clean_temp_dir_at_start"}


def check_location_option(key: str, value: Any, data_path: str, *, allow_outside: bool = False) -> None:
    """Refuse a folder option that lies outside `data_path`, or a file-name pattern that climbs
    out of its folder (absolute, or with a `..` part).

    Raises:
        errors.InvalidParameter: naming the option and the folder it must stay in.
    """
    if not isinstance(value, str) or not value:
        return
    if key in FOLDER_OPTS and not allow_outside:
        # Normalised, not resolved: `..` cannot climb out, while a symlink the operator placed inside
        # the data folder (outputs/ on another disk) stays usable; a client cannot create one.
        base = os.path.abspath(data_path)
        target = os.path.abspath(value if os.path.isabs(value) else os.path.join(base, value))
        if os.path.commonpath([base, target]) != base:
            raise errors.InvalidParameter(
                f"option {key!r}: {value!r} is outside the data folder {data_path!r} "
                "(start the server with --allow-outside-data-dir to allow other folders)", field=key)
    if key in PATTERN_OPTS:
        parts = value.replace("\\", "/").split("/")
        if os.path.isabs(value) or value.startswith(("/", "\\")) or ".." in parts:
            raise errors.InvalidParameter(
                f"option {key!r}: {value!r} must be a relative pattern without '..' parts", field=key)


# The API keeps A1111's name: note the (sic) spelling is not A1111's, the semantics are.
RESTRICT_API_NOTE = "restrict_api options are silently ignored when set through the API (A1111 behaviour)"

_overrides: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("serena_opts_override", default=None)


def cast_like(default: Any, value: Any) -> Any:
    """`value` (text from an infotext, a form …) converted to the type of `default`: bool, int,
    float or str; other types pass `value` through. Raises ValueError/TypeError on a bad number."""
    if isinstance(default, bool):
        return value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "yes", "on")
    if isinstance(default, int):
        return int(float(value))
    if isinstance(default, float):
        return float(value)
    if isinstance(default, str):
        return str(value)
    return value


class Options:
    """The option store behind `shared.opts`.

    `data` holds values explicitly set (as loaded from / saved to config.json); a missing key
    reads as its default. Reads consult the active per-job override first.
    """

    def __init__(self, data_labels: dict[str, OptionInfo] | None = None):
        labels = data_labels if data_labels is not None else {
            k: v for section in _sections().values() for k, v in section.items()}
        object.__setattr__(self, "data_labels", labels)
        object.__setattr__(self, "data", {})
        object.__setattr__(self, "frozen", False)
        object.__setattr__(self, "_sections", {k: s for s, sec in _sections().items() for k in sec})

    # --- reading -----------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        labels = object.__getattribute__(self, "data_labels")
        if name not in labels:
            raise AttributeError(f"unknown option {name!r}")
        override = _overrides.get()
        if override is not None and name in override:
            return override[name]
        data = object.__getattribute__(self, "data")
        return data[name] if name in data else labels[name].default

    def get_default(self, key: str) -> Any:
        """The default of option `key`; None for a key that is not an option (A1111 behaviour)."""
        info = self.data_labels.get(key)
        return None if info is None else info.default

    def effective(self) -> dict[str, Any]:
        """Every option with its value as seen from the current context."""
        return {k: getattr(self, k) for k in self.data_labels}

    # --- writing -----------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("data", "data_labels", "frozen", "_sections"):
            object.__setattr__(self, name, value)
            return
        self.set(name, value)

    def set(self, key: str, value: Any, is_api: bool = False, run_callbacks: bool = True) -> bool:
        """Set one option globally. Returns False for a no-op or an API write of a restricted option.

        Raises:
            errors.UnknownOption: the key is not an option.
            errors.FrozenSettings: settings are frozen by `--freeze-settings`.
        """
        if key not in self.data_labels:
            raise errors.UnknownOption(key)
        info = self.data_labels[key]
        if is_api and info.restrict_api:
            return False
        if self.data.get(key, info.default) == value:
            return False
        if self.frozen:
            raise errors.FrozenSettings(key)
        old = self.data.get(key, info.default)
        self.data[key] = value
        if run_callbacks and info.onchange is not None:
            try:
                info.onchange()
            except Exception:
                self.data[key] = old
                raise
        return True

    def add_option(self, key: str, info: OptionInfo) -> None:
        """Register an option (extensions call this from `on_ui_settings`)."""
        self.data_labels[key] = info

    def onchange(self, key: str, func: Callable[[], None], call: bool = False) -> None:
        """Call `func` whenever option `key` changes; with `call`, also once now.

        A1111's `call` defaults to True; Serena's own callers register hooks that must not run
        at registration, so the default here is False (extensions that rely on the immediate
        call pass `call=True` or get a call on the first change)."""
        self.data_labels[key].onchange = func
        if call:
            func()

    def cast_value(self, key: str, value: Any) -> Any:
        """`value` (e.g. a string from an infotext) converted to the type of option `key`'s default
        (A1111 name); unknown keys and None pass through unchanged."""
        info = self.data_labels.get(key)
        if info is None or value is None or info.default is None:
            return value
        return cast_like(info.default, value)

    def dumpjson(self) -> str:
        """Every option's current value as JSON (A1111 name)."""
        return json.dumps({k: getattr(self, k) for k in self.data_labels}, default=str)

    # --- per-job overrides ---------------------------------------------------------------------
    def validate_overrides(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Return `settings` if every key names an option, else raise UnknownOption naming it."""
        for key in settings:
            if key not in self.data_labels:
                raise errors.UnknownOption(key)
        return dict(settings)

    @contextlib.contextmanager
    def override(self, settings: dict[str, Any] | None) -> Iterator[None]:
        """Make `settings` the effective values inside the block, for this context only."""
        merged = dict(_overrides.get() or {})
        merged.update(self.validate_overrides(settings or {}))
        token = _overrides.set(merged)
        try:
            yield
        finally:
            _overrides.reset(token)

    # --- persistence ---------------------------------------------------------------------------
    def load(self, filename: str) -> None:
        """Load config.json; a missing file means defaults, a corrupt one is an error naming it."""
        if not os.path.exists(filename):
            return
        try:
            with open(filename, encoding="utf8") as f:
                loaded = json.load(f)
        except json.JSONDecodeError as e:
            raise errors.ConfigError(f"{filename} is not valid JSON: {e}") from e
        if not isinstance(loaded, dict):
            raise errors.ConfigError(f"{filename} must hold a JSON object, got {type(loaded).__name__}")
        self.data.update(loaded)

    def save(self, filename: str) -> None:
        """Write config.json atomically, indented by 4 like A1111."""
        from modules.fileio import atomic_write_text
        atomic_write_text(filename, json.dumps(self.data, indent=4, ensure_ascii=False))

    def section_of(self, key: str) -> str:
        if key in self._sections:
            return self._sections[key]
        info = self.data_labels.get(key)
        section = getattr(info, "section", None)
        if isinstance(section, (tuple, list)) and section:
            return str(section[0])
        return section if isinstance(section, str) and section else "other"
