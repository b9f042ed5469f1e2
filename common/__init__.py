"""What the server and the workers share: configuration, tensor encoding, models, envs, algorithms."""
