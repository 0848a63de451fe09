"""The network definition, data loading and the training loop (TensorFlow/Keras, no web code)."""
