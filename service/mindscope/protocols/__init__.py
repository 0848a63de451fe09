"""The standard inference protocols' transports over the same service: named tensors in and out
(`tensors`, shared by TF Serving / KServe V1 and Open Inference REST in `api/routes/v1.py` and
`v2.py`) and the Open Inference gRPC service (`grpc_service`). Like `api`, they sit on top of the
engine and reuse the API's codecs, limits and key check: dependencies point protocols -> api -> engine.
"""
