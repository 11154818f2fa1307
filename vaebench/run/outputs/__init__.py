"""What a run leaves to look at: pictures, plots, TensorBoard, MLflow."""
