"""PINK worker daemon: claims queued jobs from etcd and runs them on the local Docker engine."""
