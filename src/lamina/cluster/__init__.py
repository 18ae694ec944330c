"""Ray: starting or joining a cluster, one local Ray for a whole `dvc repro`, Ray Jobs."""
