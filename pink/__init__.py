"""PINK core: job model, state machine, etcd store, SSH transfer, config, CLI."""

__version__ = "0.1.0"
