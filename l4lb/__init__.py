"""l4lb: a reverse proxy and load balancer (TCP, TLS, HTTP, HTTP/3)."""

__version__ = "0.1.0"
__all__ = ["__version__"]
