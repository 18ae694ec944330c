"""After training: the MLflow model registry (versions, aliases, model cards), the registered
models that take raw input, and `lamina predict` over them."""
