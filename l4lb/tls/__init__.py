"""TLS: the ClientHello reader for passthrough routing, certificates and contexts for
termination, and the contexts a config asks for (`build`)."""
