"""Training: the trainer, the objective, checkpoints, several GPUs, tracking, the run record."""
