"""Distributed training: the per-worker loop and the driver that runs it with Ray Train."""
