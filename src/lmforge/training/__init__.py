"""The training loop: `train_step` (step.py), the outer loop (trainer.py), optimizer, schedule and logging."""
