"""MLflow: where runs go (URIs, experiments, tags) and a PostgreSQL-backed tracking server."""
