"""The MLflow model registry: aliases (`challenger`, `champion`, `previous`) and the
promotion gate that moves them."""
