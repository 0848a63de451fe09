"""The data plane: what every front end (the REST routes, TF Serving / KServe V1, the Open Inference
Protocol over REST and gRPC) calls between its wire format and the engine, so that each decision is
made once: which model and version serve a request and whether it is ready (`models`), who may call
(`access`), how images are decoded and within which limits (`decoding`, `budget`), named tensors in
and out of a model (`tensors`). Explanations go through the engine's method registry and runner
(`engine.explain`). Dependencies point front ends (`api`, `protocols`) -> data plane -> engine.
"""
