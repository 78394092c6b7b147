"""The DLA network: the voxel classifier and its presets (``network``), dense whole-volume inference
(``dense``), the training loop (``train``) and multi-process training with torchrun (``ddp``)."""
