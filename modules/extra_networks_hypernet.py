"""A1111's module name for the `<hypernet:…>` extra network; the implementation is in
`modules.hypernetworks.extra_network`."""
from modules.hypernetworks.extra_network import ExtraNetworkHypernet  # noqa: F401
