"""TLS seen from a layer-4 router: read the ClientHello to route by SNI, never terminate here."""
