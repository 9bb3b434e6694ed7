"""Hypernetworks (A1111's `modules.hypernetworks` package): files, the MLP, and applying them to attention.

`hypernetwork` holds A1111's names (`Hypernetwork`, `HypernetworkModule`, `list_hypernetworks`,
`load_hypernetworks`, `apply_hypernetworks`, …); `attention_hooks` puts them into the diffusers UNet
for one job; `extra_network` is the `<hypernet:name:multiplier>` prompt tag.
"""
