"""Pure sampling maths: k-diffusion style samplers, timestep samplers, sigma schedules and the
denoiser adapters that turn an eps/v-predicting UNet into a Karras denoiser.

Nothing in this package reads options, global state or devices; the glue in
`modules.sd_samplers_*` does that and calls these functions with explicit arguments.
"""
from __future__ import annotations
