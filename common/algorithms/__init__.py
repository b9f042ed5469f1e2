"""The paper's learning methods: each turns a rollout into a loss, as plain functions."""
