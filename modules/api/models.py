"""Request and response models of `/sdapi/v1`, written by hand with A1111's field names and defaults.

A1111 generates its txt2img/img2img models from the processing classes' `__init__`; Serena writes
them out (spec §1.3) so the API contract is readable and does not move when a processing field
is added. Every field accepts null, as in A1111; a null sent for a field whose default is not
null means "use the default" (A1111 would pass the None on and usually fail later).
Unknown keys are ignored (A1111's pydantic v1 behaviour; clients such as webuiapi send extras).
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator


class _NullMeansDefault(BaseModel):
    """Base: ignore unknown keys; an explicit null on a field with a non-null default is dropped."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls_with_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {k: v for k, v in data.items()
                if not (v is None and k in fields and fields[k].default is not None)}


# Seeds are 64-bit signed in the noise generators; leave room for seed + image index.
SEED_MIN, SEED_MAX = -(2 ** 63), 2 ** 63 - 1 - 2 ** 16


# --- txt2img / img2img ----------------------------------------------------------------------------
class _ProcessingFields(_NullMeansDefault):
    """Fields shared by both generation requests (StableDiffusionProcessing's init fields)."""

    prompt: str | list[str] = ""
    negative_prompt: str | list[str] = ""
    styles: Optional[list[str]] = None
    seed: int = Field(-1, ge=SEED_MIN, le=SEED_MAX)
    subseed: int = Field(-1, ge=SEED_MIN, le=SEED_MAX)
    subseed_strength: float = Field(0.0, ge=0.0, le=1.0)
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: Optional[str] = None
    scheduler: Optional[str] = None
    batch_size: int = Field(1, ge=1)
    n_iter: int = Field(1, ge=1)
    steps: int = Field(50, ge=1)
    cfg_scale: float = 7.0
    width: int = Field(512, ge=8)
    height: int = Field(512, ge=8)
    restore_faces: Optional[bool] = None
    tiling: Optional[bool] = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: Optional[float] = Field(None, ge=0.0)
    denoising_strength: Optional[float] = Field(None, ge=0.0, le=1.0)
    s_min_uncond: Optional[float] = None
    s_churn: Optional[float] = None
    s_tmax: Optional[float] = None
    s_tmin: Optional[float] = None
    s_noise: Optional[float] = None
    override_settings: Optional[dict[str, Any]] = None
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: Optional[str] = None
    refiner_switch_at: Optional[float] = Field(None, ge=0.0, le=1.0)
    disable_extra_networks: bool = False
    firstpass_image: Optional[str] = None
    comments: Optional[dict[str, Any]] = None
    # API-only fields (spec §1.3)
    sampler_index: str = "Euler"
    script_name: Optional[str] = None
    script_args: list[Any] = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    force_task_id: Optional[str] = None
    infotext: Optional[str] = None


API_ONLY_FIELDS = ("sampler_index", "script_name", "script_args", "send_images", "save_images",
                   "alwayson_scripts", "force_task_id", "infotext")


class StableDiffusionTxt2ImgProcessingAPI(_ProcessingFields):
    """POST /sdapi/v1/txt2img."""

    enable_hr: bool = False
    firstphase_width: int = Field(0, ge=0)
    firstphase_height: int = Field(0, ge=0)
    hr_scale: float = Field(2.0, gt=0.0)
    hr_upscaler: Optional[str] = None
    hr_second_pass_steps: int = Field(0, ge=0)
    hr_resize_x: int = Field(0, ge=0)
    hr_resize_y: int = Field(0, ge=0)
    hr_checkpoint_name: Optional[str] = None
    hr_sampler_name: Optional[str] = None
    hr_scheduler: Optional[str] = None
    hr_prompt: str | list[str] = ""
    hr_negative_prompt: str | list[str] = ""


class StableDiffusionImg2ImgProcessingAPI(_ProcessingFields):
    """POST /sdapi/v1/img2img."""

    init_images: Optional[list[str]] = None
    resize_mode: int = Field(0, ge=0, le=3)
    denoising_strength: Optional[float] = Field(0.75, ge=0.0, le=1.0)
    image_cfg_scale: Optional[float] = None
    mask: Optional[str] = None
    mask_blur_x: int = Field(4, ge=0)
    mask_blur_y: int = Field(4, ge=0)
    mask_blur: Optional[int] = Field(None, ge=0)
    mask_round: bool = True
    inpainting_fill: int = Field(0, ge=0, le=3)
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = Field(0, ge=0)
    inpainting_mask_invert: int = Field(0, ge=0, le=1)
    initial_noise_multiplier: Optional[float] = None
    latent_mask: Optional[str] = None
    include_init_images: bool = False


class TextToImageResponse(BaseModel):
    images: Optional[list[str]] = Field(None, description="The generated images in base64 format.")
    parameters: dict[str, Any]
    info: str


class ImageToImageResponse(TextToImageResponse):
    pass


# --- extras ----------------------------------------------------------------------------------------
class ExtrasBaseRequest(_NullMeansDefault):
    resize_mode: Literal[0, 1] = 0
    show_extras_results: bool = True
    gfpgan_visibility: float = Field(0, ge=0, le=1)
    codeformer_visibility: float = Field(0, ge=0, le=1)
    codeformer_weight: float = Field(0, ge=0, le=1)
    upscaling_resize: float = Field(2, gt=0)
    upscaling_resize_w: int = Field(512, ge=1)
    upscaling_resize_h: int = Field(512, ge=1)
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = Field(0, ge=0, le=1)
    upscale_first: bool = False


class ExtrasSingleImageRequest(ExtrasBaseRequest):
    image: str = ""


class ExtrasSingleImageResponse(BaseModel):
    html_info: str
    image: Optional[str] = None


class FileData(BaseModel):
    data: str
    name: str


class ExtrasBatchImagesRequest(ExtrasBaseRequest):
    imageList: list[FileData]


class ExtrasBatchImagesResponse(BaseModel):
    html_info: str
    images: list[str]


# --- png-info, progress, interrogate ---------------------------------------------------------------
class PNGInfoRequest(BaseModel):
    image: str


class PNGInfoResponse(BaseModel):
    info: str
    items: dict[str, Any]
    parameters: dict[str, Any]


class ProgressResponse(BaseModel):
    progress: float
    eta_relative: float
    state: dict[str, Any]
    current_image: Optional[str] = None
    textinfo: Optional[str] = None


class InterrogateRequest(BaseModel):
    image: str = ""
    model: str = "clip"


class InterrogateResponse(BaseModel):
    caption: Optional[str] = None


class InternalProgressRequest(BaseModel):
    id_task: Optional[str] = None
    id_live_preview: int = -1
    live_preview: bool = True


class InternalProgressResponse(BaseModel):
    active: bool
    queued: bool
    completed: bool
    progress: Optional[float] = None
    eta: Optional[float] = None
    live_preview: Optional[str] = None
    id_live_preview: Optional[int] = None
    textinfo: Optional[str] = None
    queue_ahead: Optional[int] = Field(None, description="While queued: how many jobs run before this one.")


# --- listings --------------------------------------------------------------------------------------
class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, str]


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: Optional[list[str]] = None
    default_rho: Optional[float] = None
    need_inner_model: Optional[bool] = None


class UpscalerItem(BaseModel):
    name: str
    model_name: Optional[str] = None
    model_path: Optional[str] = None
    model_url: Optional[str] = None
    scale: Optional[float] = None


class LatentUpscalerModeItem(BaseModel):
    name: str


class SDModelItem(BaseModel):
    title: str
    model_name: str
    hash: Optional[str] = None
    sha256: Optional[str] = None
    filename: str
    config: Optional[str] = None


class SDVaeItem(BaseModel):
    model_name: str
    filename: str


class HypernetworkItem(BaseModel):
    name: str
    path: Optional[str] = None


class FaceRestorerItem(BaseModel):
    name: str
    cmd_dir: Optional[str] = None


class RealesrganItem(BaseModel):
    name: str
    path: Optional[str] = None
    scale: Optional[int] = None


class PromptStyleItem(BaseModel):
    name: str
    prompt: Optional[str] = None
    negative_prompt: Optional[str] = None


class EmbeddingItem(BaseModel):
    step: Optional[int] = None
    sd_checkpoint: Optional[str] = None
    sd_checkpoint_name: Optional[str] = None
    shape: int
    vectors: int


class EmbeddingsResponse(BaseModel):
    loaded: dict[str, EmbeddingItem]
    skipped: dict[str, EmbeddingItem]


class MemoryResponse(BaseModel):
    ram: dict[str, Any]
    cuda: dict[str, Any]


class ScriptsList(BaseModel):
    txt2img: list[str] = Field(default_factory=list)
    img2img: list[str] = Field(default_factory=list)


class ScriptArg(BaseModel):
    label: Optional[str] = None
    value: Optional[Any] = None
    minimum: Optional[Any] = None
    maximum: Optional[Any] = None
    step: Optional[Any] = None
    choices: Optional[list[str]] = None


class ScriptInfo(BaseModel):
    name: Optional[str] = None
    is_alwayson: Optional[bool] = None
    is_img2img: Optional[bool] = None
    args: list[ScriptArg]


class ExtensionItem(BaseModel):
    name: str
    remote: str
    branch: Optional[str] = None  # None on a detached head
    commit_hash: str
    version: str
    commit_date: int
    enabled: bool


class LoraItem(BaseModel):
    name: str
    alias: str
    path: str
    metadata: dict[str, Any]


class CreateResponse(BaseModel):
    info: str


# --- error bodies (declared in the OpenAPI document for every status a route can answer) --------------
class ErrorResponse(BaseModel):
    """A1111's error body: every 4xx/5xx except request-validation failures."""

    error: str = Field(description="The error's class name, e.g. InvalidParameter, NotFound, HTTPException.")
    detail: Any = Field("", description="What went wrong, naming the offending field or value.")
    body: Any = Field("", description="Extra data about the error; empty for most.")
    errors: str = Field("", description="The error as text.")


class ValidationErrorItem(BaseModel):
    loc: list[str | int] = Field(description="Where: 'body', then the field path.")
    msg: str
    type: str
    input: Any = None


class ValidationErrorResponse(BaseModel):
    """FastAPI's request-validation failure (wrong type, out of range, malformed JSON …)."""

    detail: list[ValidationErrorItem]


class UnprocessableResponse(RootModel[Union[ValidationErrorResponse, ErrorResponse]]):
    """422: a request value Serena cannot accept, in FastAPI's validation shape or A1111's error shape."""
