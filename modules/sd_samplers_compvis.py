"""A1111 keeps `modules.sd_samplers_compvis` as a name for the timestep samplers module; extensions
still import it. It is the same module object as `modules.sd_samplers_timesteps`."""
import sys

from modules import sd_samplers_timesteps

sys.modules[__name__] = sd_samplers_timesteps
