"""What every generative family shares: config, training loop, checkpoints, logging, init, metrics."""
