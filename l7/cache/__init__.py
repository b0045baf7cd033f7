"""The shared HTTP cache (RFC 9111): `policy` decides, `store` keeps."""
