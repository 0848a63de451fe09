"""HTTP only: request decoding, response encoding, routes. All model work is in `mindscope.engine`."""
