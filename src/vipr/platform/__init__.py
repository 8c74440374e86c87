"""The platform layer: workspace (MLflow store), run tracking and the model registry."""
