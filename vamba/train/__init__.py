"""Training: Hydra configs -> transformers Trainer + DeepSpeed ZeRO-3 (see `trainer.py`); run with
`vamba train <overrides>` or `torchrun --nproc_per_node=N -m vamba train <overrides>`."""
