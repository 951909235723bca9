"""Training: Hydra configs -> transformers Trainer + DeepSpeed ZeRO-3 (see `trainer.py`); run with
`torchrun -m vamba.train <overrides>` or `vamba train <overrides>`."""
