"""The DLA network: shared config, normalisation and result types (``base``), the voxel classifier and its presets
(``network``), dense whole-volume inference (``dense``), the 3D U-Net (``unet3d``), the training loop (``train``) and
multi-process training with torchrun (``ddp``)."""
