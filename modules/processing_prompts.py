"""A job's prompts and their text conditioning (spec §4): the steps between request and sampler.

One positive and one negative prompt per image (styles applied, `#` comments stripped), the
`<name:args>` extra-network tags taken out of each batch, the step count the prompt schedules
span, and the conditioning of the first and the hires pass, computed through the processing
object's cache methods (`get_conds_with_caching`, A1111's) so an extension that overrides them
still sees every call. The processing classes' `setup_prompts` / `setup_conds` /
`calculate_hr_conds` delegate here; `modules.processing` re-exports the helper names.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from modules import errors, shared

if TYPE_CHECKING:  # annotations only: processing imports this module
    from modules.processing import StableDiffusionProcessing, StableDiffusionProcessingTxt2Img


def expand_prompts(prompt: str | list[str], negative_prompt: str | list[str], count: int,
                   styles: list[str]) -> tuple[list[str], list[str]]:
    """One positive and one negative prompt per image, styles applied, comments stripped."""
    if isinstance(prompt, list):
        prompts = list(prompt)
    elif isinstance(negative_prompt, list):
        prompts = [prompt] * len(negative_prompt)
    else:
        prompts = [prompt] * count
    negatives = list(negative_prompt) if isinstance(negative_prompt, list) else [negative_prompt] * len(prompts)
    if len(prompts) != len(negatives):
        raise errors.InvalidParameter(
            f"got {len(prompts)} prompts and {len(negatives)} negative prompts; they must match",
            field="negative_prompt")
    database = getattr(shared, "prompt_styles", None)
    if styles and database is not None:
        prompts = [database.apply_styles_to_prompt(x, styles) for x in prompts]
        negatives = [database.apply_negative_styles_to_prompt(x, styles) for x in negatives]
    if shared.opts.enable_prompt_comments:
        from modules import prompt_parser
        prompts = [prompt_parser.strip_comments(x) for x in prompts]
        negatives = [prompt_parser.strip_comments(x) for x in negatives]
    return prompts, negatives


def parse_extra_networks(prompts: list[str]) -> tuple[list[str], dict[str, list[list[str]]]]:
    """Remove `<name:args>` tags from every prompt; the data comes from the first prompt (spec §4)."""
    from modules import extra_networks
    return extra_networks.parse_prompts(prompts)


def sampler_total_steps(sampler_name: str | None, steps: int) -> int:
    """Steps the prompt schedules span: doubled for second-order samplers (spec §4)."""
    from modules import sd_samplers
    config = sd_samplers.find_sampler_config(sampler_name)
    if callable(getattr(config, "total_steps", None)):
        return int(config.total_steps(steps))
    options = getattr(config, "options", None) or {}
    second_order = options.get("second_order", False)
    if second_order and not shared.opts.dont_fix_second_order_samplers_schedule:
        return steps * 2
    return steps


def load_embeddings(p: StableDiffusionProcessing) -> None:
    """Load the textual-inversion embeddings (first use, or files changed; not again when
    `p.do_not_reload_embeddings`). A rebuilt database empties the shared conditioning caches,
    whose keys do not cover the embeddings."""
    from modules.textual_inversion import textual_inversion
    database = textual_inversion.embedding_db
    model = p.sd_model
    if p.do_not_reload_embeddings and getattr(model.cond_stage_model, "embedding_db", None) is database:
        return
    if database.load_textual_inversion_embeddings(model):
        for name in ("cached_c", "cached_uc", "cached_hr_c", "cached_hr_uc"):
            cache = getattr(p, name, None)
            if isinstance(cache, list) and len(cache) == 2:
                cache[0] = cache[1] = None


def note_embeddings(p: StableDiffusionProcessing, prompts: list[str], negatives: list[str], steps: int) -> None:
    """Add the embeddings these prompts trigger to the job's `TI hashes` infotext value.

    Positive prompts' embeddings come first, then the negative prompts'; each name once per job
    (A1111 repeats a name used in both).
    """
    from modules import prompt_parser
    from modules.textual_inversion import textual_inversion
    conditioner = p.sd_model.cond_stage_model
    if getattr(conditioner, "embedding_db", None) is None or not conditioner.embedding_db.word_embeddings:
        return
    texts = [t for text in dict.fromkeys(prompts) for t in prompt_parser.get_token_counter_texts(text, steps)]
    texts += [t for text in dict.fromkeys(negatives)
              for t in prompt_parser.get_token_counter_texts(text, steps, is_positive=False)]
    used = textual_inversion.used_embeddings(conditioner, list(dict.fromkeys(texts)), shared.opts.emphasis)
    if not used:
        return
    known = p.__dict__.setdefault("_ti_embeddings", {})
    for name, embedding in used.items():
        known.setdefault(name, embedding)
    value = textual_inversion.ti_hashes(known)
    if value:
        p.extra_generation_params["TI hashes"] = value


def setup_conds(p: StableDiffusionProcessing) -> None:
    """This batch's conditioning into `p.uc` (plain) and `p.c` (multicond), through `p`'s caches."""
    from modules import prompt_parser
    load_embeddings(p)
    total_steps = sampler_total_steps(p.sampler_name, p.steps)
    p.step_multiplier = max(total_steps // max(p.steps, 1), 1)
    p.firstpass_steps = total_steps
    negative = prompt_parser.SdConditioning(p.negative_prompts, is_negative_prompt=True,
                                            width=p.width, height=p.height)
    positive = prompt_parser.SdConditioning(p.prompts, width=p.width, height=p.height)
    p.uc = p.get_conds_with_caching(prompt_parser.get_learned_conditioning, negative, total_steps,
                                    [p.cached_uc], p.extra_network_data)
    p.c = p.get_conds_with_caching(prompt_parser.get_multicond_learned_conditioning, positive,
                                   total_steps, [p.cached_c], p.extra_network_data)
    note_embeddings(p, p.prompts, p.negative_prompts, total_steps)


def calculate_hr_conds(p: StableDiffusionProcessingTxt2Img) -> None:
    """Second-pass conditioning; reuses the first-pass cache when the prompts are the same.

    The batch's hires prompts are cut to one per image first: an `hr_prompt` list longer than the
    prompts (A1111 accepts one) would otherwise give a short last batch more hires prompts than
    images. `processing_validation` has already refused lists with too few.
    """
    if getattr(p, "is_hr_pass", False) and not p.disable_extra_networks:  # A1111: the hires prompt's networks
        from modules import extra_networks
        extra_networks.activate(p, p.hr_extra_network_data)
    from modules import prompt_parser
    images = len(p.prompts)
    p.hr_prompts, p.hr_negative_prompts = p.hr_prompts[:images], p.hr_negative_prompts[:images]
    steps = p.hr_second_pass_steps or p.steps
    total_steps = sampler_total_steps(p.hr_sampler_name or p.sampler_name, steps)
    size = dict(width=p.hr_upscale_to_x, height=p.hr_upscale_to_y)
    negative = prompt_parser.SdConditioning(p.hr_negative_prompts, is_negative_prompt=True, **size)
    positive = prompt_parser.SdConditioning(p.hr_prompts, **size)
    p.hr_uc = p.get_conds_with_caching(prompt_parser.get_learned_conditioning, negative, p.firstpass_steps,
                                       [p.cached_hr_uc, p.cached_uc], p.hr_extra_network_data, total_steps)
    p.hr_c = p.get_conds_with_caching(prompt_parser.get_multicond_learned_conditioning, positive, p.firstpass_steps,
                                      [p.cached_hr_c, p.cached_c], p.hr_extra_network_data, total_steps)
    note_embeddings(p, p.hr_prompts, p.hr_negative_prompts, total_steps)
