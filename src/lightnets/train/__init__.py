"""Training: recipes, the trainer loop, checkpoints, distributed runs, metrics."""
