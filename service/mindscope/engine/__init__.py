"""Model work on numpy arrays: the store, inference, activations, weights and explanations.

Nothing in this package imports FastAPI or Starlette; failures are raised as `mindscope.errors`.
"""
