"""HTTP semantics for l4lb's `http` and `https` listeners: one request model, one pipeline,
protocol adapters (HTTP/1.1 now; HTTP/2 and HTTP/3 feed the same model later)."""
