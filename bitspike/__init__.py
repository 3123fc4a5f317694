"""bitspike: adaptive-bit multi-bit spiking neural networks, from training to verified FPGA hardware.

Sub-packages: :mod:`bitspike.host` (training, export, golden model, board
driver), :mod:`bitspike.gen` (the network compiler), :mod:`bitspike.rtl_templates`
(hardware blocks), :mod:`bitspike.sim` (co-simulation and verification).
"""

__version__ = "0.1.0"
