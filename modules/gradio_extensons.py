"""A1111's (misspelled) module name for the Gradio compatibility layer: `modules.gradio_extensions`."""
from modules.gradio_extensions import *  # noqa: F401,F403
from modules.gradio_extensions import add_classes_to_gradio_component, install  # noqa: F401
