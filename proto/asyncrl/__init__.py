"""asyncrl: a gRPC parameter server and worker daemons for asynchronous deep RL (Mnih et al., 2016)."""

__version__ = "0.1.0"
