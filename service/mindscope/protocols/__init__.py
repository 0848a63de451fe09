"""The standard inference protocols (TF Serving / KServe V1, the Open Inference Protocol V2) over the engine."""
