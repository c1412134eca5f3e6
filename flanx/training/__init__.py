"""The training engine: optimizer, losses, train/eval steps, partitioning, checkpoints, input pipeline, loop."""
