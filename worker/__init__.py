"""The worker daemon: env copies that act with a pulled policy and push gradients to the parameter server."""
